// Node-RED settings for bench/compare.py: no editor, no admin API, no credential encryption prompts.
// The harness sets NODE_RED_PORT and passes --userDir (a temporary directory holding the flow and its
// flows_cred.json, written per run); MQTT_PORT, MQTT_CLIENT_ID and VM_URL fill the flow's ${...} properties.
// flow-sos.json's function reads TWILIO_URL, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM and DUTY_LINE
// (env.get), set by bench/sos_latency.py.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: Number(process.env.NODE_RED_PORT || 1880),
    httpAdminRoot: false,
    httpNodeRoot: false,
    credentialSecret: false,
    flowFilePretty: true,
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    functionExternalModules: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
};

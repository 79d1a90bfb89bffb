"""Development and demo tooling shared by the tests, `scripts/demo` and `bench/`: local Mosquitto,
VictoriaMetrics and the Twilio stand-in, the gateway as a child process, the demo runner.

Not part of the gateway at run time (not shipped in the wheel, imported by no runtime package).
"""

"""Sans-IO protocol cores: pure state machines with no I/O, no clock reads and
no global randomness, driven by thin async drivers and by the simulator."""

"""Where budget counters, reservations and usage live; one small interface, several backends."""

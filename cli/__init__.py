"""The fedward command: parse, call one room, print."""

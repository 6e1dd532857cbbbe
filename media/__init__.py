"""Files that ship with the program: the demo clip and the connecting picture."""

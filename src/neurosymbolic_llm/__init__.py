"""The library: llama/ (the network and how to run it), symbolic/ (the VSA half), pipeline/ (the stages)."""

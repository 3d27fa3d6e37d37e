"""The embedded demo: the tiny Llama's recipe (pretraining.py), its measurement (report.py) and the
scripts that build it and its data. See README.md in this folder."""

"""The embedded demo model: its recipe (recipe.py: settings and presets; pretraining_data.py: the
prompts; pretraining.py: training and saving) and its measurement (report.py). The commands that
build it and its data: cli/make_tiny_llama.py, cli/make_demo_data.py; why it is built so:
Programs/demo/README.md."""

"""`python -m neurosymbolic_llm COMMAND [options]`: the same as the console command `nsllm`."""
from neurosymbolic_llm.cli import main

raise SystemExit(main())

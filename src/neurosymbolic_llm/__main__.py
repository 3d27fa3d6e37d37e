"""`python -m neurosymbolic_llm COMMAND [options]`: the same as the console command `nsllm`."""
from neurosymbolic_llm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

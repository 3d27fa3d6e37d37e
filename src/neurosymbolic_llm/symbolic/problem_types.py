"""The ten problem types, in the order the paper lists them; the order fixes each type's id and atom
(engine.py). Kept apart from the solver's table (solver.py, one entry per name in this order) so that
the option schemas, and so every command's --help, import no torch.
"""
PROBLEM_TYPES = ("addition", "multiplication", "division", "modulo", "gcd", "lcm", "square_mod", "bitwise_and",
                 "bitwise_xor", "bitwise_or")

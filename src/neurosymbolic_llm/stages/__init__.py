"""The commands' work, one module per stage or command, peers: each reads what an earlier stage wrote
(files) through the shared contracts of `neurosymbolic_llm.pipeline`, and none imports another."""

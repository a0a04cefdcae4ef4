"""The evaluator's tools: the registry client (list, pull), model directories, evaluate, predict, export."""

"""Benchmark evaluation (ArenaHard v0.1, AlpacaEval 2, MT-Bench) for the evaluate stage and verify_eval.py.

data      – loaders for official and mini sets, pinned downloads with sha256 checks
prompts   – judge prompts (written for this project, following each official tool's structure)
judges    – OpenAI-compatible API judge and local log-prob judge
answers   – policy / baseline answers, cached per question id
arena_hard, alpaca_eval, mt_bench – the protocols: judge requests, verdict parsing, scores
"""

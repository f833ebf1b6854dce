"""Scoring: accuracy and PDR per instruction/task/level, consistency, bootstrap intervals, run and sweep comparison."""

"""Instructions and their perturbations: instruction sets, PromptBench's prompts, the adversarial search."""

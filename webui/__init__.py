"""lfops' WebUI: LlamaBoard (LLaMA-Factory 0.9.5) wrapped with Save to repo, Review, Runs & lineage, users and roles.

Start it with `lfops webui` (or `python -m webui`); `webui.serve.serve` is the entry point.
"""

"""Tools: coverage-guided fuzzing of the engine (fuzz), generated doc figures (docfigs)."""

"""What the book's notebooks use beyond the model: exercise checkers and the grader (exercises),
interactive explorers (widgets)."""

"""The report's figures, one module per group of panels."""

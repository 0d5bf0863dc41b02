"""Constitutional AI: critique/revision loops (SL-CAI) and AI preference labels (RL-CAI)."""

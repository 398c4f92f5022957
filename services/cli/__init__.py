"""`eapctl`: the operators' and HR's command line."""

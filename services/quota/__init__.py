"""The quota service: the durable ledger of funded counseling hours and budgets."""

"""The quota: the ledger's RPCs, its hot path under load and across replicas, its properties."""

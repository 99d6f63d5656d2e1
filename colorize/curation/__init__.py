"""Curation: quality checks, the relevance classifier, people's decisions, FiftyOne."""

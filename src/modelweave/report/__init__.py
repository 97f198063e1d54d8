"""Figures and (later) the HTML report."""

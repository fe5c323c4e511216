"""Plotly figure builders, one module per lesson name: pure functions from data to `go.Figure`."""

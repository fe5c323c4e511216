"""The numbers each lesson shows, one module per lesson name (no plotting, no Streamlit)."""

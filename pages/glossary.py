"""The glossary: every term the lessons use, each with an anchor the lessons link to."""
import streamlit as st

import lab_ui

lab_ui.routed()
st.title(":material/menu_book: Glossary")
st.caption("Every lesson links the first mention of these terms here.")
for term in lab_ui.glossary_terms():
    st.subheader(term, anchor=lab_ui.glossary_anchor(term))
    lab_ui.lesson_section("glossary", term, link_terms=False)

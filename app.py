"""quantlab: the router. Draws the shared sidebar, then runs the lesson picked in the navigation."""
import streamlit as st

import lab_ui

st.set_page_config(page_title="quantlab — learn quantization on real tensors", page_icon=":material/calculate:",
                   layout="wide")

# Explicit st.Page entries (from the one lesson registry) switch off Streamlit's legacy
# auto-discovery of the pages/ folder.
page = st.navigation({
    "Start": [st.Page("pages/home.py", title="Welcome", icon=":material/home:", default=True),
              st.Page("pages/glossary.py", title="Glossary", icon=":material/menu_book:",
                      url_path=lab_ui.GLOSSARY_PAGE)],
    "Lessons": [st.Page(lesson.file, title=lesson.title, icon=lesson.icon, url_path=lesson.url)
                for lesson in lab_ui.LESSONS],
})
frame = lab_ui.sidebar(page.url_path)
try:
    page.run()
finally:  # a lesson that stops early (st.stop after a one-line error) still gets its link
    lab_ui.finish_page(frame)

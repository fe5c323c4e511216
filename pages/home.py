"""Welcome page: what the lab teaches, and a link to every lesson."""
import streamlit as st

import lab_ui

lab_ui.routed()

lab_ui.lesson_section("home", "intro")
st.subheader("Lessons")
cols = st.columns(2)
for i, lesson in enumerate(lab_ui.LESSONS):
    with cols[i % 2].container(border=True):
        st.page_link(lesson.file, label=lesson.title, icon=lesson.icon)
        st.caption(lesson.blurb)
lab_ui.lesson_section("home", "how")

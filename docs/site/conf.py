"""Sphinx configuration of the course website (``python -m helpers site`` copies this folder
next to the published notebooks and builds it; see helpers/tooling/site.py).

Sphinx + myst-nb render the executed notebooks without running them; the Sphinx Book Theme
gives the course-order sidebar and Sphinx's offline search. Nothing may load from the
network: no CDN scripts (myst-nb's widget loader is off; plotly.js is ``_static/plotly.min.js``).
"""
project = "Asynchronous Events"
author = "the course authors"
html_title = project

extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "conf.py"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]

# The notebooks arrive executed: never run them, never load widget JavaScript from a CDN.
nb_execution_mode = "off"
nb_ipywidgets_js = {}
nb_merge_streams = True

html_theme = "sphinx_book_theme"
# The course mark (an event log read by a consumer): the tab's icon on every page, so a
# browser never asks for a /favicon.ico the site does not have, and the sidebar's logo.
html_favicon = "course-mark.svg"
html_logo = "course-mark.svg"
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_js_files = ["plotly.min.js", "course-figures.js"]
html_copy_source = False      # the executed notebooks are not shipped twice
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "home_page_in_toc": True,
    "logo": {"text": project, "alt_text": "The course mark: an event log read by a consumer"},
    "show_navbar_depth": 1,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "use_issues_button": False,
    "use_edit_page_button": False,
    "launch_buttons": {},      # the pages carry the course's own launch buttons
    "navigation_with_keys": False,
}
html_context = {"default_mode": "light"}

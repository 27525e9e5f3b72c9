"""The Streamlit dashboard: ``app.py`` is its one entry point, ``views/`` the page scripts and ``common`` the
plumbing. (The folder is not called ``pages/``: Streamlit would read that as a second, automatic navigation.)"""

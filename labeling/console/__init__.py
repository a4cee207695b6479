"""The project console: server-rendered pages where a project is run (create, overview, data, annotators,
export, settings, API tokens). Thin interfaces like the APIs: parse, call one service or selector, render.
The quality and training tabs are the dashboard's and the training app's pages, sharing the tab bar."""

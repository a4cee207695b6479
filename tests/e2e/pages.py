"""Helpers for the browser tests that act on a Playwright page: open the labeling page, wait for a
saved judgment, and record Content-Security-Policy violations."""
from __future__ import annotations


def open_label(page, live_server, project):
    page.goto(f"{live_server.url}/label/{project.slug}/")
    page.wait_for_selector("body[data-ready]")


def wait_saved(page, count: int):
    # A function, not an expression string: Playwright evals strings in the page, which the CSP refuses.
    page.wait_for_function(f"() => document.getElementById('progress-text').textContent.startsWith('You: {count} done')")


# Reports both ways chromium has: the DOM event (sent to Python as it fires, so a navigation
# cannot lose it) and the console line.
REPORT_SCRIPT = """
document.addEventListener("securitypolicyviolation", (e) => window.__cspReport(
  [e.violatedDirective, e.blockedURI, e.sourceFile + ":" + e.lineNumber, location.pathname].join(" ")));
"""


def watch_csp(page) -> list[str]:
    violations: list[str] = []
    page.context.expose_function("__cspReport", lambda text: violations.append(text))
    page.context.add_init_script(REPORT_SCRIPT)
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    return violations

"""Helpers for the browser tests that act on a Playwright page: open the labeling page, wait for a
saved judgment, and record Content-Security-Policy violations."""
from __future__ import annotations


def open_label(page, live_server, project):
    page.goto(f"{live_server.url}/label/{project.slug}/")
    page.wait_for_selector("body[data-ready]")


def shown_ids(page) -> list[int]:
    """Response ids in the order the labeling page displays them (cards are #resp-<id>)."""
    page.wait_for_selector(".response")
    return [int(i) for i in page.locator(".response").evaluate_all("cs => cs.map(c => c.id.slice(5))")]


def ranking_on_screen(page) -> list[list[int]]:
    """Step 2's ranking as shown: groups of response ids, a tied item joining the group above it."""
    items = page.locator("#ranking li").evaluate_all(
        "lis => lis.map(li => [Number(li.dataset.id), li.classList.contains('tied')])")
    groups: list[list[int]] = []
    for rid, tied in items:
        if tied and groups:
            groups[-1].append(rid)
        else:
            groups.append([rid])
    return groups


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

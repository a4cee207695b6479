"""Quality selectors on a hand-built project, the quality API and the dashboard page."""
import re
import pytest

from labeling.selectors import quality
from tests.labeling.judging import ids, import_rows, judge, tasks_with_responses

pytestmark = pytest.mark.django_db


@pytest.fixture
def trio(project_factory, make_user):
    """Three pairwise tasks, m1 at position 0 and m2 at 1, judged by ann, bob and cid:
    t1: +, +, -   t2: +, +, + (cid saw m2 first)   t3: +, tie, -   (+ = m1 preferred)."""
    project = project_factory(mode="pairwise")
    tasks = tasks_with_responses(project, {
        f"q{i}": [{"text": f"a{i}", "source": "m1"}, {"text": f"b{i}", "source": "m2"}] for i in (1, 2, 3)})
    ann, bob, cid = make_user("ann"), make_user("bob"), make_user("cid")
    t1, t2, t3 = tasks
    judge(t1, ann, [[0], [1]], flags={str(ids(t1)[1]): ["harmful_advice"]}, time_spent_ms=1000)
    judge(t1, bob, [[0], [1]])
    judge(t1, cid, [[1], [0]])
    judge(t2, ann, [[0], [1]], time_spent_ms=3000)
    judge(t2, bob, [[0], [1]])
    judge(t2, cid, [[0], [1]], shown=[1, 0])
    judge(t3, ann, [[0], [1]], time_spent_ms=2000)
    judge(t3, bob, [[0, 1]])
    judge(t3, cid, [[1], [0]])
    return project


def rows(project):
    return quality.judgment_rows(project=project)


def by_name(items):
    return {item["username"]: item for item in items}


def test_agreement_per_project_and_annotator_by_hand(trio):
    report = quality.agreement_report(rows=rows(trio))
    # t1: ab agree, ac and bc disagree; t2: all three agree; t3: only ann-cid compare (bob tied), disagree.
    assert report["project"]["agree"] == 4 and report["project"]["compared"] == 7 and report["project"]["items"] == 3
    per = by_name(report["annotators"])
    assert (per["ann"]["agree"], per["ann"]["compared"]) == (3, 5)
    assert (per["bob"]["agree"], per["bob"]["compared"]) == (3, 4)
    assert (per["cid"]["agree"], per["cid"]["compared"]) == (2, 5)
    assert len(report["over_time"]) == 1 and report["over_time"][0]["agreement"] == pytest.approx(4 / 7)


def test_superseded_and_imported_judgments_do_not_count(trio):
    from labeling.models import Judgment

    old = Judgment.objects.get(annotator__username="cid", task__prompt__text="q1")
    judge(old.task, old.annotator, [[0], [1]], supersedes=old)
    import_rows(trio, {"id": "x/1", "prompt": "q1", "chosen": "b1", "rejected": "a1"})
    assert quality.agreement_report(rows=rows(trio))["project"]["agree"] == 6


def test_alpha_and_kappa(trio):
    alpha = quality.alpha_report(rows=rows(trio))
    from labeling import stats
    assert alpha["preference_alpha"] == pytest.approx(stats.krippendorff_alpha_ordinal([[1, 1, -1], [1, 1, 1], [1, 0, -1]]))
    assert alpha["units"] == 3 and alpha["likert_alpha"] is None
    kappas = {(k["a"], k["b"]): k["kappa"] for k in quality.kappa_report(rows=rows(trio), min_overlap=3)}
    # bob [+, +, tie] vs cid [-, +, -]: p_o = 1/3, p_e = 2/9, kappa = 1/7.
    assert kappas[("bob", "cid")] == pytest.approx(1 / 7) and kappas[("ann", "bob")] == pytest.approx(0.0)
    assert quality.kappa_report(rows=rows(trio), min_overlap=4) == []


def test_gold_accuracy_and_time_per_task(project_factory, make_user):
    project = project_factory(mode="pairwise")
    import_rows(project, {"prompt": "g", "responses": ["right", "wrong"], "gold_ranking": [[0], [1]]},
                {"prompt": "p", "responses": ["x", "y"]})
    gold, plain = project.tasks.order_by("id")
    ann, cid = make_user("ann"), make_user("cid")
    judge(gold, ann, [[0], [1]], time_spent_ms=4000)
    judge(plain, ann, [[1], [0]], time_spent_ms=1000)
    judge(gold, cid, [[1], [0]], time_spent_ms=500)
    per = by_name(quality.annotator_report(rows=rows(project)))
    assert per["ann"]["gold_accuracy"] == 1.0 and per["cid"]["gold_accuracy"] == 0.0
    assert per["ann"]["median_ms"] == 2500 and per["ann"]["judgments"] == 2 and per["cid"]["gold_pairs"] == 1


def test_position_bias_overall_and_per_annotator(trio):
    report = quality.position_bias_report(rows=rows(trio))
    # 8 decided judgments; the first-shown response won 5 (ann 3/3, bob 2/2, cid 0/3).
    assert (report["overall"]["first_wins"], report["overall"]["decided"]) == (5, 8)
    per = by_name(report["annotators"])
    assert per["ann"]["rate"] == 1.0 and per["cid"]["rate"] == 0.0 and per["bob"]["decided"] == 2
    assert report["overall"]["z_vs_50"] == pytest.approx((5 - 4) / 2 ** 0.5)
    low, high = report["overall"]["ci95"]
    assert low < 5 / 8 < high


def test_safety_flag_rates_per_source(trio):
    report = {s["source"]: s for s in quality.safety_report(project=trio, rows=rows(trio))}
    assert report["m2"]["responses"] == 9 and report["m2"]["any_flag_rate"] == pytest.approx(1 / 9)
    assert report["m2"]["flags"] == [{"key": "harmful_advice", "label": "Gives harmful advice", "count": 1,
                                       "rate": pytest.approx(1 / 9)}]
    assert report["m1"]["any_flag_rate"] == 0 and report["m2"]["trend"][0]["flagged"] == 1


def test_majority_vote_with_min_agreement(trio):
    pairs = quality.pair_consensus_list(project=trio)
    assert [(p["votes"], p["agreement"], p["unanimous"]) for p in pairs] == [
        (3, pytest.approx(2 / 3), False), (3, 1.0, True), (3, pytest.approx(1 / 3), False)]
    assert pairs[0]["winner"] == pairs[0]["a"] and pairs[2]["winner"] is None
    assert len(quality.pair_consensus_list(project=trio, min_agreement=0.6)) == 2


def test_bradley_terry_per_prompt_and_source_leaderboard(trio):
    from labeling.models import Prompt

    prompt = Prompt.objects.get(project=trio, text="q2")
    ratings = quality.prompt_bradley_terry(project=trio, prompt_id=prompt.pk)
    assert [r["response_id"] for r in ratings] == ids(prompt.tasks.get()) and ratings[0]["rating"] > ratings[1]["rating"]
    board = quality.source_leaderboard(project=trio, rounds=50)
    assert [r["source"] for r in board] == ["m1", "m2"] and board[0]["battles"] == 9
    assert board[0]["ci_low"] <= board[0]["rating"] <= board[0]["ci_high"]


def test_quality_api_roles(trio, member, api_client):
    viewer = api_client(member(trio, "viewer"))
    report = viewer.get(f"/api/projects/{trio.slug}/quality/?rounds=20").json()
    assert report["agreement"]["project"]["compared"] == 7 and report["leaderboard"][0]["source"] == "m1"
    consensus = viewer.get(f"/api/projects/{trio.slug}/quality/consensus/?min_agreement=0.9").json()
    assert len(consensus) == 1 and consensus[0]["unanimous"]
    assert viewer.get(f"/api/projects/{trio.slug}/quality/leaderboard/?rounds=10").json()[0]["source"] == "m1"
    prompt = trio.prompts.first()
    assert len(viewer.get(f"/api/projects/{trio.slug}/prompts/{prompt.pk}/bradley-terry/").json()) == 2
    assert viewer.get(f"/api/projects/{trio.slug}/quality/?period=year").status_code == 400
    assert api_client(member(trio, "annotator")).get(f"/api/projects/{trio.slug}/quality/").status_code == 403


def test_dashboard_renders_escaped_svg_without_inline_script(trio, member, client):
    from labeling.models import Response

    Response.objects.filter(source="m2").update(source='<script>alert("x")</script>')
    client.force_login(member(trio, "admin"))
    page = client.get(f"/dashboard/{trio.slug}/")
    html = page.content.decode()
    assert page.status_code == 200 and "<svg" in html and "<rect" in html
    assert not re.findall(r"<script(?![^>]*\bsrc=)", html)  # only the layout's script files, nothing inline
    assert "<script>alert" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "0.571" in html  # 4/7 agreement


def test_dashboard_is_for_admins_and_viewers(trio, member, make_user, client):
    client.force_login(member(trio, "annotator"))
    assert client.get(f"/dashboard/{trio.slug}/").status_code == 403
    client.force_login(make_user())
    assert client.get(f"/dashboard/{trio.slug}/").status_code == 404
    client.logout()
    assert client.get(f"/dashboard/{trio.slug}/").status_code == 302

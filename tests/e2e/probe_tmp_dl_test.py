import pytest
from django.test import Client
from labeling.services.projects import project_create
pytestmark = pytest.mark.django_db
def test_probe(make_user):
    u = make_user(is_staff=True)
    p = project_create(name="x", slug="x", created_by=u)
    c = Client(); c.force_login(u)
    r = c.get("/projects/x/export/?preview=1&format=trl&split=&consensus=all&min_agreement=&annotator=&judgment_source=&sources=&date_from=&date_to=&pseudonymous=on")
    import re
    url = re.search(r'id="export-download" href="([^"]+)"', r.content.decode()).group(1).replace("&amp;", "&")
    print(url)
    r2 = c.get(url); print(r2.status_code, r2.content[:300] if not r2.streaming else "stream")
    r3 = c.get("/projects/x/export/?format=trl"); print(re.findall(r'<select name="consensus">.*?</select>', r3.content.decode())[:1])

"""Django's ModelBackend with the per-request user load written as one plain query.

Every authenticated request loads its user from the session; building that query with the ORM
cost more CPU than running it, which showed on the annotator's hot path."""
from django.contrib.auth import backends, get_user_model


class ModelBackend(backends.ModelBackend):
    def get_user(self, user_id):
        model = get_user_model()
        user = next(iter(model._default_manager.raw(
            f"SELECT * FROM {model._meta.db_table} WHERE {model._meta.pk.column} = %s", [user_id]
        )), None)
        return user if user is not None and self.user_can_authenticate(user) else None

"""API tokens (DRF's TokenAuthentication): each user creates, replaces and revokes their own, one at a time."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import transaction
from rest_framework.authtoken.models import Token


@transaction.atomic
def api_token_create(*, user: AbstractUser) -> Token:
    """A new token for the user; an earlier one stops working at once (a leaked key is replaced, not added to)."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


def api_token_revoke(*, user: AbstractUser) -> bool:
    """Delete the user's token; True when there was one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)

import pytest
from pydantic import ValidationError

from service.config import Settings

REAL_SECRET = "k" * 40


def test_production_refuses_the_placeholder_secret_key() -> None:
    with pytest.raises(ValidationError, match="DARKROOM_SECRET_KEY"):
        Settings(env="production")
    with pytest.raises(ValidationError, match="DARKROOM_SECRET_KEY"):
        Settings(env="production", secret_key="short")


def test_production_refuses_a_placeholder_database_password() -> None:
    url = "postgresql+asyncpg://postgres:postgres@db:5432/darkroom"
    with pytest.raises(ValidationError, match="placeholder password"):
        Settings(env="production", secret_key=REAL_SECRET, database_url=url)


def test_production_with_real_secrets_starts() -> None:
    url = "postgresql+asyncpg://darkroom:S3cure-and-long@db:5432/darkroom"
    settings = Settings(env="production", secret_key=REAL_SECRET, database_url=url)
    assert settings.is_production
    assert not settings.ssrf_allows_loopback


def test_development_allows_local_webhook_receivers_unless_told_otherwise() -> None:
    assert Settings().ssrf_allows_loopback
    assert not Settings(webhook_allow_private_networks=False).ssrf_allows_loopback

from wip_mailer.tokens import Purpose, make_token, read_token, token_maker

SECRET = "a-secret-key-for-tokens-0123456789"


def test_bulk_token_maker_spells_the_same_tokens_as_itsdangerous() -> None:
    for purpose in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES):
        fast = token_maker(SECRET, purpose)
        for subscriber_id, list_id in [(1, 1), (7, None), (123456789, 42), (2**40, 3)]:
            token = fast(subscriber_id, list_id)
            assert token == make_token(SECRET, purpose, subscriber_id, list_id)
            claims = read_token(SECRET, purpose, token)
            assert (claims.subscriber_id, claims.list_id) == (subscriber_id, list_id)


def test_bulk_tokens_of_one_purpose_are_refused_for_another() -> None:
    import pytest

    from wip_mailer.tokens import InvalidTokenError

    token = token_maker(SECRET, Purpose.PREFERENCES)(5, 1)
    with pytest.raises(InvalidTokenError):
        read_token(SECRET, Purpose.UNSUBSCRIBE, token)

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


def test_a_token_can_name_the_campaign_and_old_tokens_stay_valid() -> None:
    from itsdangerous import URLSafeSerializer

    fast = token_maker(SECRET, Purpose.UNSUBSCRIBE)
    for subscriber_id, list_id, campaign_id in [(1, 1, 7), (9, None, 12), (2**40, 3, 2**33)]:
        token = fast(subscriber_id, list_id, campaign_id)
        assert token == make_token(SECRET, Purpose.UNSUBSCRIBE, subscriber_id, list_id, campaign_id)
        claims = read_token(SECRET, Purpose.UNSUBSCRIBE, token)
        assert (claims.subscriber_id, claims.list_id, claims.campaign_id) == (
            subscriber_id, list_id, campaign_id)
    # a link from an email sent before campaigns were named in it (a two-element payload)
    old = URLSafeSerializer(SECRET, salt="wip-mailer.unsubscribe.v1").dumps([5, 2])
    assert old == fast(5, 2)
    claims = read_token(SECRET, Purpose.UNSUBSCRIBE, old)
    assert (claims.subscriber_id, claims.list_id, claims.campaign_id) == (5, 2, None)


def test_a_payload_of_another_shape_is_refused() -> None:
    import pytest
    from itsdangerous import URLSafeSerializer

    from wip_mailer.tokens import InvalidTokenError

    signer = URLSafeSerializer(SECRET, salt="wip-mailer.unsubscribe.v1")
    for payload in ([5, 2, None], [5, 2, "7"], [5, 2, 7, 8], [5, 2, True], [True, 2]):
        with pytest.raises(InvalidTokenError):
            read_token(SECRET, Purpose.UNSUBSCRIBE, signer.dumps(payload))

"""Personal data in free text (issue 13): found and masked, against oracles written here.

The properties generate what must be found (mobile numbers, ID numbers whose check
character is computed here by the ISO 7064 definition, not the module's weight table,
e-mail addresses) inside Chinese and English text, and what must not (checksum-invalid
IDs, amounts, order references, dates, postcodes); masking must hide the digits, keep the
last ones, and never find its own masks again.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.personal_text import Finding, contains_personal, find_personal, mask_personal

QUICK = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text around the data: Chinese, English, punctuation, spaces; no digits, no `+ @ * ( )`.
PROSE = st.text(
    alphabet=st.sampled_from(
        list("请拨打联系我电话号码客服投诉洗衣机严重问题，。：；！？、“”《》")
        + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        + list(" ,.;:!?'\"/\n")
    ),
    max_size=30,
)
# Between a piece of data and its neighbours: never a letter, digit or dot, so an
# e-mail address cannot grow into the prose.
GAP = st.sampled_from([" ", "，", "。", "：", "请拨打", "联系", "、", "\n", "（", "）", " / "])


def embed(draw: st.DrawFn, piece: str) -> tuple[str, int]:
    """`piece` inside prose; the text and where the piece starts."""
    before = draw(PROSE) + draw(GAP)
    after = draw(GAP) + draw(PROSE)
    return before + piece + after, len(before)


# -- oracles ------------------------------------------------------------------------------


def id_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 as defined: weight 2^(i-1) mod 11 for position i from the right
    (the check character is i = 1), check = (12 - sum mod 11) mod 11, 10 written X."""
    total = sum(int(d) * pow(2, 17 - k, 11) for k, d in enumerate(first17))
    check = (12 - total % 11) % 11
    return "X" if check == 10 else str(check)


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    region = str(draw(st.integers(100000, 999999)))
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)))
    sequence = f"{draw(st.integers(0, 999)):03d}"
    first17 = region + born.strftime("%Y%m%d") + sequence
    check = id_check_char(first17)
    if check == "X" and draw(st.booleans()):
        check = "x"
    return first17 + check


@st.composite
def invalid_resident_ids(draw: st.DrawFn) -> str:
    valid = draw(resident_ids())
    wrong = draw(st.sampled_from([c for c in "0123456789X" if c != valid[-1].upper()]))
    return valid[:-1] + wrong


@st.composite
def mobiles(draw: st.DrawFn) -> tuple[str, str, str]:
    """A mainland mobile number as written, its prefix (+86 and such), its 11 digits."""
    digits = "1" + draw(st.sampled_from("3456789")) + draw(st.text("0123456789", min_size=9, max_size=9))
    sep = draw(st.sampled_from(["", " ", "-"]))
    prefix = draw(st.sampled_from(["", "", "+86", "+86 ", "0086", "86-", "86"]))
    return prefix + digits[:3] + sep + digits[3:7] + sep + digits[7:], prefix, digits


LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_%+-"


@st.composite
def emails(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.text(LOCAL_CHARS, min_size=1, max_size=8), min_size=1, max_size=3))
    label = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?\Z")
    labels = draw(st.lists(label, min_size=1, max_size=3))
    tld = draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=6))
    return ".".join(pieces) + "@" + ".".join(labels) + "." + tld


# Numbers that are no one's: amounts, order references, dates, postcodes.
ORDINARY = st.one_of(
    st.builds(lambda n, c: f"¥{n:,}.{c:02d}", st.integers(0, 10**9), st.integers(0, 99)),
    st.builds(lambda n: f"{n}元", st.integers(0, 10**6)),
    st.builds(
        lambda d, n: f"ORD-{d:%Y%m%d}-{n:04d}",
        st.dates(min_value=date(2000, 1, 1)),
        st.integers(0, 9999),
    ),
    st.builds(lambda d: f"{d:%Y-%m-%d}", st.dates(min_value=date(1900, 1, 1))),
    st.builds(lambda d: f"{d:%Y}年{d.month}月{d.day}日", st.dates(min_value=date(1900, 1, 1))),
    st.builds(lambda d: f"{d:%Y%m%d}", st.dates(min_value=date(1900, 1, 1))),
    st.builds(lambda n: f"{n:06d}", st.integers(0, 999999)),  # postcode
    st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59)),
)

# Anything: data, near-data, masks, separators and prose, run together.
FRAGMENTS = st.one_of(
    PROSE,
    GAP,
    mobiles().map(lambda m: m[0]),
    resident_ids(),
    invalid_resident_ids(),
    emails(),
    ORDINARY,
    st.text("0123456789", min_size=1, max_size=20),
    st.text("０１２３４５６７８９", min_size=1, max_size=12),
    st.sampled_from(
        [" ", "-", "+", "(", ")", "*", "**", "***", "****", "@", "＠", ".", "X", "＋", "　"]
        + ["010-12345678", "(0755) 8765 4321", "+44 20 7946 0958", "+1 (415) 555-2671"]
        + ["138****5678", "010-****5678", "+44 ****0958", "j***@example.com", "***@163.com"]
        + ["110105********002X", "+86 138****5678", "(0755) ****4321", "+44 ****"]
    ),
)
ANY_TEXT = st.lists(FRAGMENTS, max_size=12).map("".join)


# -- properties ---------------------------------------------------------------------------


@QUICK
@given(st.data())
def test_mobile_numbers_are_found_and_masked(data: st.DataObject) -> None:
    written, prefix, digits = data.draw(mobiles())
    text, at = embed(data.draw, written)
    assert find_personal(text) == [Finding("mobile", at, at + len(written))]
    masked = mask_personal(text)
    after = text[at + len(written) :]
    assert masked == text[:at] + prefix + digits[:3] + "****" + digits[-4:] + after
    assert digits not in re.sub(r"[^0-9*]", "", masked)


@QUICK
@given(st.data())
def test_valid_resident_ids_are_found(data: st.DataObject) -> None:
    number = data.draw(resident_ids())
    text, at = embed(data.draw, number)
    assert find_personal(text) == [Finding("resident_id", at, at + 18)]
    masked = mask_personal(text)
    assert number[:6] + "********" + number[-4:] in masked
    assert number[6:14] not in masked


@QUICK
@given(st.data())
def test_checksum_invalid_ids_are_not_ids_and_are_left_alone(data: st.DataObject) -> None:
    number = data.draw(invalid_resident_ids())
    text, _ = embed(data.draw, number)
    assert [f for f in find_personal(text) if f.kind == "resident_id"] == []
    assert find_personal(text) == []  # nor any piece of it as another kind
    assert mask_personal(text) == text


@QUICK
@given(st.data())
def test_emails_are_found_and_masked(data: st.DataObject) -> None:
    address = data.draw(emails())
    text, at = embed(data.draw, address)
    assert find_personal(text) == [Finding("email", at, at + len(address))]
    local, domain = address.split("@")
    masked = mask_personal(text)
    assert (local[0] if len(local) > 1 else "") + "***@" + domain in masked
    if len(local) > 1:
        assert local + "@" not in masked


@QUICK
@given(st.text(alphabet=st.characters(blacklist_characters="@＠", blacklist_categories=["Nd"])))
def test_text_without_digits_or_at_is_unchanged(text: str) -> None:
    assert find_personal(text) == []
    assert not contains_personal(text)
    assert mask_personal(text) == text  # an equal string: the remembered one when seen before


@QUICK
@given(st.lists(st.tuples(PROSE, ORDINARY), min_size=1, max_size=6), PROSE)
def test_ordinary_numbers_are_not_personal(pieces: list[tuple[str, str]], end: str) -> None:
    text = "".join(prose + "，" + number + " " for prose, number in pieces) + end
    assert find_personal(text) == []
    assert mask_personal(text) == text  # an equal string: the remembered one when seen before


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_findings_are_in_order_and_never_overlap(text: str) -> None:
    found = find_personal(text)
    assert all(0 <= f.start < f.end <= len(text) for f in found)
    assert all(a.end <= b.start for a, b in zip(found, found[1:]))
    assert contains_personal(text) == bool(found)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_masking_is_idempotent_and_masks_are_never_found(text: str) -> None:
    masked = mask_personal(text)
    assert find_personal(masked) == []
    assert mask_personal(masked) == masked


@QUICK
@given(st.lists(st.one_of(mobiles().map(lambda m: m[0]), resident_ids(), emails()), min_size=1, max_size=5), st.data())
def test_each_of_several_findings_is_masked(pieces: list[str], data: st.DataObject) -> None:
    text = "".join(data.draw(PROSE) + data.draw(GAP) + piece + data.draw(GAP) for piece in pieces)
    found = find_personal(text)
    assert [text[f.start : f.end] for f in found] == pieces
    masked = mask_personal(text)
    for piece, f in zip(pieces, found):
        if f.kind != "email":
            assert re.sub(r"\D", "", piece)[-11:] not in re.sub(r"[^0-9*]", "", masked)


# -- examples, rule by rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("请拨打13812345678联系我", "请拨打138****5678联系我"),
        ("手机：139 1234 5678。", "手机：139****5678。"),
        ("tel 150-1234-5678, thanks", "tel 150****5678, thanks"),
        ("+86 138-1234-5678", "+86 138****5678"),
        ("+8613812345678", "+86138****5678"),
        ("0086 13812345678", "0086 138****5678"),
        ("86-13812345678", "86-138****5678"),
        ("全角１３８１２３４５６７８号码", "全角138****5678号码"),
        ("**19912345678**", "**199****5678**"),
        ("13812345678 13987654321", "138****5678 139****4321"),
    ],
)
def test_mobile_examples(text: str, masked: str) -> None:
    assert [f.kind for f in find_personal(text)] == ["mobile"] * masked.count("****")
    assert mask_personal(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "12812345678",  # 12 is no mobile prefix
        "138123456789",  # 12 digits: a longer run is not split
        "1381234567",  # 10 digits
        "订单号 813812345678",  # inside a longer run
        "1381234 56789",  # groups other than 3-4-4
    ],
)
def test_not_mobile(text: str) -> None:
    assert find_personal(text) == []


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("电话：010-12345678。", "电话：010-****5678。"),
        ("(0755) 8765 4321", "(0755) ****4321"),
        ("（0755）87654321转分机", "（0755）****4321转分机"),
        ("021 6123 4567", "021 ****4567"),
        ("02161234567", "021****4567"),
        ("座机0571-876-5432", "座机0571-****432"),
    ],
)
def test_landline_examples(text: str, masked: str) -> None:
    assert [f.kind for f in find_personal(text)] == ["landline"]
    assert mask_personal(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "87654321",  # no area code
        "011-12345678",  # 011 is no area code
        "0755-01234567",  # a local number does not start with 0
        "0755-123456",  # 6 digits
        "0755-123456789",  # 9 digits
    ],
)
def test_not_landline(text: str) -> None:
    assert find_personal(text) == []


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+44 20 7946 0958", "+44 ****0958"),
        ("call +1 (415) 555-2671 today", "call +1 ****2671 today"),
        ("法国+33 1 23 45 67 89号码", "法国+33 ****6789号码"),
        ("+852 9123 4567。", "+852 ****4567。"),
        ("+86 10 6552 9988", "+86 ****9988"),  # a +86 number that is not a mobile
        ("+49.30.1234567", "+49 ****4567"),
        ("+354 1234", "+354 ****"),  # 7 digits: the 4 after the country code stay hidden
        ("＋44 20 7946 0958", "+44 ****0958"),
    ],
)
def test_international_examples(text: str, masked: str) -> None:
    assert [f.kind for f in find_personal(text)] == ["international_phone"]
    assert mask_personal(text) == masked


@pytest.mark.parametrize(
    "text",
    ["+123456", "+0 7946 0958", "+1234567890123456", "价格+1299元", "+ 44 20 7946 0958"],
)
def test_not_international(text: str) -> None:
    assert find_personal(text) == []


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("邮箱zhang.wei@example.com，谢谢", "邮箱z***@example.com，谢谢"),
        ("mail: John.Doe+tag@mail.example.co.uk.", "mail: J***@mail.example.co.uk."),
        ("13812345678@163.com", "1***@163.com"),  # one address, not a mobile number
        ("a@b.cn", "***@b.cn"),
        ("x_y-z%1@sub-domain.example.org", "x***@sub-domain.example.org"),
        ("全角＠也算：wang＠qq.com", "全角＠也算：w***@qq.com"),
    ],
)
def test_email_examples(text: str, masked: str) -> None:
    assert [f.kind for f in find_personal(text)] == ["email"]
    assert mask_personal(text) == masked


@pytest.mark.parametrize(
    "text",
    ["user@localhost", "@example.com", "a@b", "a@b.c", "用户@例子.中国", "a..b@", "price@ 5"],
)
def test_not_email(text: str) -> None:
    assert find_personal(text) == []


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("身份证号11010519491231002X，请核实", "身份证号110105********002X，请核实"),
        ("ID 11010519491231002x.", "ID 110105********002x."),
        ("440304198506151237", "440304********1237"),
        ("2100年: 110105210012310021", "2100年: 110105********0021"),
        ("身份证１１０１０５１９４９１２３１００２Ｘ。", "身份证110105********002X。"),
    ],
)
def test_resident_id_examples(text: str, masked: str) -> None:
    assert [f.kind for f in find_personal(text)] == ["resident_id"]
    assert mask_personal(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "110105194912310021",  # wrong check character (X is right)
        "110105194902300020",  # 30 February, with a valid check character
        "110105189912310023",  # born 1899, with a valid check character
        "440524188001010014",  # born 1880: the standard's own example, out of range
        "110105210101010015",  # born 2101
        "11010519491231002X3",  # 19 characters: a longer run is not split
        "211010519491231002X",  # 19 characters, the valid ID in its last 18
        "110105491231002",  # the old 15-digit form is not detected
        "010105194912310026",  # region starting 0, with a valid check character
        "110105 19491231 002X",  # with separators
    ],
)
def test_not_resident_id(text: str) -> None:
    assert find_personal(text) == []


def test_a_checksum_valid_feb_30_is_still_rejected() -> None:
    first17 = "11010519490230002"
    assert find_personal(first17 + id_check_char(first17)) == []
    first17 = "11010520000229002"  # 2000 is a leap year
    assert [f.kind for f in find_personal(first17 + id_check_char(first17))] == ["resident_id"]


def test_everything_at_once_in_chinese_context() -> None:
    text = (
        "投诉人张先生，手机13812345678，座机010-12345678，邮箱zhang@example.com，"
        "身份证11010519491231002X，海外+44 20 7946 0958。订单ORD-20240101-0001，"
        "金额¥1,299.00，2024-01-05下单，邮编100000。"
    )
    assert [f.kind for f in find_personal(text)] == [
        "mobile",
        "landline",
        "email",
        "resident_id",
        "international_phone",
    ]
    assert mask_personal(text) == (
        "投诉人张先生，手机138****5678，座机010-****5678，邮箱z***@example.com，"
        "身份证110105********002X，海外+44 ****0958。订单ORD-20240101-0001，"
        "金额¥1,299.00，2024-01-05下单，邮编100000。"
    )
    assert contains_personal(text)
    assert not contains_personal("订单ORD-20240101-0001，金额¥1,299.00")


def test_a_text_without_findings_is_returned_as_is() -> None:
    text = "洗衣机2024年1月5日坏了，花了¥1,299.00"
    assert mask_personal(text) == text  # an equal string: the remembered one when seen before

"""The router's pure model (R13): reading ``uci show``, deciding changes, masking secrets."""

from __future__ import annotations

import pytest

from devices.uci import (
    BandSteeringChange,
    ChannelsChange,
    InvalidSetting,
    PassphraseChange,
    RouterOutputError,
    Setting,
    SsidChange,
    WirelessChange,
    change_commands,
    parse_board,
    parse_uci_show,
    parse_wireless,
    redact,
)

SHOWN = """\
wireless.radio0=wifi-device
wireless.radio0.band='2g'
wireless.radio0.channel='6'
wireless.radio0.htmode='HE20'
wireless.radio1=wifi-device
wireless.radio1.band='5g'
wireless.radio1.channel='auto'
wireless.radio1.disabled='1'
wireless.ap0=wifi-iface
wireless.ap0.device='radio0'
wireless.ap0.mode='ap'
wireless.ap0.ssid='Home 2.4'
wireless.ap0.encryption='none'
wireless.ap1=wifi-iface
wireless.ap1.device='radio1'
wireless.ap1.ssid='Home'
wireless.ap1.encryption='psk2'
wireless.ap1.key='s3cret-pass'
wireless.ap1.bss_transition='1'
wireless.ap1.ieee80211k='1'
wireless.sta0=wifi-iface
wireless.sta0.device='radio1'
wireless.sta0.mode='sta'
wireless.sta0.ssid='Upstream'
"""
CONFIG = parse_wireless(SHOWN)


def test_parse_wireless_reads_radios_and_interfaces() -> None:
    assert [(r.name, r.band, r.channel, r.htmode, r.disabled) for r in CONFIG.radios] == [
        ("radio0", "2g", 6, "HE20", False),
        ("radio1", "5g", None, "", True),
    ]
    ap0, ap1, sta0 = CONFIG.interfaces
    assert (ap0.ssid, ap0.encryption, ap0.has_key, ap0.mode) == ("Home 2.4", "none", False, "ap")
    assert (ap1.ssid, ap1.has_key, ap1.bss_transition, ap1.ieee80211k) == ("Home", True, True, True)
    assert sta0.mode == "sta"
    assert CONFIG.interfaces_of("radio1") == (ap1,)
    assert CONFIG.interfaces_of(None) == (ap0, ap1)
    assert not CONFIG.band_steering  # two SSIDs, and ap0 has no 802.11k/v


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("wireless.radio0 channel='6'\n", id="no-equals"),
        pytest.param("wireless.radio0=wifi-device\nwireless.radio0.band='6g'\n", id="bad-band"),
        pytest.param(
            "wireless.radio0=wifi-device\nwireless.radio0.band='2g'\n"
            "wireless.radio0.channel='six'\n",
            id="bad-channel",
        ),
        pytest.param("wireless.ap0.ssid='unterminated\n", id="bad-quoting"),
    ],
)
def test_parse_wireless_refuses_output_it_cannot_read(text: str) -> None:
    with pytest.raises(RouterOutputError):
        parse_wireless(text)


def test_parse_uci_show_unquotes_values() -> None:
    assert parse_uci_show("a.b.c='it'\\''s'\n\na.b='x'\n") == {"a.b.c": "it's", "a.b": "x"}


def test_parse_board() -> None:
    board = parse_board(
        '{"hostname": "gw", "model": "X1", "board_name": "x1", "kernel": "5.15",'
        ' "release": {"description": "OpenWrt 23.05"}}'
    )
    assert (board.hostname, board.model, board.release, board.kernel) == (
        "gw",
        "X1",
        "OpenWrt 23.05",
        "5.15",
    )
    with pytest.raises(RouterOutputError):
        parse_board('{"model": "X1"}')


CHANGES: list[object] = [
    pytest.param(SsidChange(ssid="Family"), [("ap0.ssid", "Family"), ("ap1.ssid", "Family")]),
    pytest.param(SsidChange(ssid="Five", radio="radio1"), [("ap1.ssid", "Five")], id="one-radio"),
    pytest.param(
        PassphraseChange(passphrase="correct horse"),
        [
            ("ap0.encryption", "psk2"),  # an open AP gets WPA2 with its key
            ("ap0.key", "correct horse"),
            ("ap1.key", "correct horse"),
        ],
        id="passphrase",
    ),
    pytest.param(
        ChannelsChange(channels={"radio0": 11, "radio1": "auto"}),
        [("radio0.channel", "11"), ("radio1.channel", "auto")],
        id="channels",
    ),
    pytest.param(
        ChannelsChange(channels={"radio0": 3}, restore=True),
        [("radio0.channel", "3")],
        id="restore-any-channel-of-the-band",
    ),
    pytest.param(
        BandSteeringChange(enabled=False),
        [
            ("ap0.bss_transition", "0"),
            ("ap0.ieee80211k", "0"),
            ("ap1.bss_transition", "0"),
            ("ap1.ieee80211k", "0"),
        ],
        id="band-steering-off",
    ),
]


@pytest.mark.parametrize(("change", "settings"), CHANGES)
def test_change_settings(change: WirelessChange, settings: list[Setting]) -> None:
    change.check()
    assert change.settings(CONFIG) == settings


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(SsidChange(ssid=""), "1 to 32 bytes", id="empty-ssid"),
        pytest.param(SsidChange(ssid="x" * 33), "1 to 32 bytes", id="long-ssid"),
        pytest.param(SsidChange(ssid="a\nb"), "control characters", id="ssid-newline"),
        pytest.param(PassphraseChange(passphrase="short"), "8 to 63", id="short-passphrase"),
        pytest.param(PassphraseChange(passphrase="pässwörter"), "printable", id="non-ascii"),
        pytest.param(ChannelsChange(channels={}), "no channel", id="no-channel"),
        pytest.param(ChannelsChange(channels={"radio0;reboot": 6}), "radio name", id="bad-radio"),
    ],
)
def test_changes_invalid_in_themselves(change: WirelessChange, message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        change.check()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(SsidChange(ssid="x", radio="radio9"), "no access point interface on radio9"),
        pytest.param(ChannelsChange(channels={"radio9": 6}), "has no radio radio9", id="radio9"),
        pytest.param(
            ChannelsChange(channels={"radio0": 3}),
            r"channel 3 is not allowed on radio0 \(2g\); allowed: 1, 6, 11",
            id="R13-overlapping-2g",
        ),
        pytest.param(
            ChannelsChange(channels={"radio1": 6}, restore=True), "not allowed", id="wrong-band"
        ),
        pytest.param(BandSteeringChange(enabled=True), "same SSID", id="steering-two-ssids"),
    ],
)
def test_changes_the_configuration_refuses(change: WirelessChange, message: str) -> None:
    change.check()
    with pytest.raises(InvalidSetting, match=message):
        change.settings(CONFIG)


def test_a_64_hex_digit_passphrase_is_a_key() -> None:
    PassphraseChange(passphrase="0123456789abcdef" * 4).check()


def test_the_passphrase_is_not_in_repr() -> None:
    assert "correct horse" not in repr(PassphraseChange(passphrase="correct horse"))


def test_change_commands_quote_values_then_commit_and_reload() -> None:
    assert change_commands([("ap0.ssid", "it's home"), ("radio0.channel", "6")]) == [
        "uci set wireless.ap0.ssid='it'\"'\"'s home'",
        "uci set wireless.radio0.channel=6",
        "uci commit wireless",
        "wifi reload",
    ]


def test_redact_masks_secrets_and_keys() -> None:
    shown = (
        "uci set wireless.ap0.key='correct horse'\nwireless.ap1.key='other'\nplain correct horse"
    )
    # The shell-quoted secret goes whole; a key line that uci show prints is masked too.
    assert redact(shown, ["correct horse"]) == (
        "uci set wireless.ap0.key=***\nwireless.ap1.key='***'\nplain ***"
    )

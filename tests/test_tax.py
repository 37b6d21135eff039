"""Tax book: cost basis (FIFO and average), realized gains, PIT (seed §2.1.2, §2.2), reports.

The worked example is computed by hand in the comments, in KZT, and checked to the tiyn.

Purchase lots (BTC, oldest first):
    L1  0.50 BTC at 20,000,000.00 KZT/BTC  -> cost 10,000,000.00
    L2  0.30 BTC at 25,000,000.50 KZT/BTC  -> cost  7,500,000.15
    L3  0.20 BTC at 30,000,000.00 KZT/BTC  -> cost  6,000,000.00
                                     total 1.00 BTC, 23,500,000.15
Four card payments sell:
    S1  0.20 BTC for  5,600,000.00
    S2  0.40 BTC for  9,200,000.00
    S3  0.25 BTC for  5,000,000.00
    S4  0.15 BTC for  6,000,000.00
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest

from services.contracts import Lot, Residency
from services.money import D
from services.tax import PIT_RATES, TaxBook, round_half_up

BTC = 10**8  # satoshi per BTC
KZT = 100  # tiyn per KZT
EPOCH_2025 = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
DAY_S = 86_400.0

LOTS = (
    Lot(50_000_000, D("20000000.00")),
    Lot(30_000_000, D("25000000.50")),
    Lot(20_000_000, D("30000000.00")),
)
# (sale id, quantity in satoshi, proceeds in tiyn, at_s): S4 falls in 2026.
SALES = (
    ("S1", 20_000_000, 5_600_000_00, 10 * DAY_S),
    ("S2", 40_000_000, 9_200_000_00, 100 * DAY_S),
    ("S3", 25_000_000, 5_000_000_00, 200 * DAY_S),
    ("S4", 15_000_000, 6_000_000_00, 400 * DAY_S),
)


def book_with(method: str, residency: Residency) -> TaxBook:
    book = TaxBook(method, epoch_unix_s=EPOCH_2025)  # type: ignore[arg-type]
    book.add_lots("h", residency, "BTC", LOTS)
    return book


def realize_all(book: TaxBook, withheld: tuple[str, ...] = ()) -> list[tuple[int, int, int]]:
    out = []
    for sale_id, qty, proceeds, at_s in SALES:
        r = book.realize("h", "BTC", qty, proceeds, at_s, sale_id, withheld=sale_id in withheld)
        assert r.vat_exempt  # seed §2.2: the sale of digital assets is VAT-exempt
        assert r.gain_kzt == proceeds - r.basis_kzt
        out.append((r.basis_kzt, r.gain_kzt, r.pit_kzt))
    return out


def test_rates_come_from_the_seed() -> None:
    # Seed §2.1.2 / §2.2: 10 % for residents, 20 % for non-residents.
    assert PIT_RATES[Residency.RESIDENT] == Decimal("0.10")
    assert PIT_RATES[Residency.NON_RESIDENT] == Decimal("0.20")


def test_fifo_resident() -> None:
    # S1: 0.20 of L1 at 20,000,000.00 -> basis 4,000,000.00; gain 1,600,000.00; PIT 10 % 160,000.00
    # S2: 0.30 of L1 (6,000,000.00) + 0.10 of L2 (2,500,000.05) -> basis 8,500,000.05;
    #     gain 9,200,000.00 - 8,500,000.05 = 699,999.95; PIT 69,999.995 -> half up 70,000.00
    # S3: 0.20 of L2 (5,000,000.10) + 0.05 of L3 (1,500,000.00) -> basis 6,500,000.10;
    #     gain 5,000,000.00 - 6,500,000.10 = -1,500,000.10 (a loss): PIT 0
    # S4: 0.15 of L3 -> basis 4,500,000.00; gain 1,500,000.00; PIT 150,000.00
    assert realize_all(book_with("fifo", Residency.RESIDENT)) == [
        (4_000_000_00, 1_600_000_00, 160_000_00),
        (8_500_000_05, 699_999_95, 70_000_00),
        (6_500_000_10, -1_500_000_10, 0),
        (4_500_000_00, 1_500_000_00, 150_000_00),
    ]


def test_fifo_non_resident() -> None:
    # Same bases and gains; PIT 20 %: 320,000.00; 139,999.99 (exactly 13,999,999 tiyn); 0;
    # 300,000.00
    assert realize_all(book_with("fifo", Residency.NON_RESIDENT)) == [
        (4_000_000_00, 1_600_000_00, 320_000_00),
        (8_500_000_05, 699_999_95, 139_999_99),
        (6_500_000_10, -1_500_000_10, 0),
        (4_500_000_00, 1_500_000_00, 300_000_00),
    ]


def test_average_cost_resident_and_non_resident() -> None:
    # Average cost: 1.00 BTC for 23,500,000.15 -> 23,500,000.15 KZT/BTC for every unit.
    # S1: 0.20 -> basis 4,700,000.03; gain 899,999.97; PIT 10 % 89,999.997 -> 90,000.00;
    #     20 % 179,999.994 -> 179,999.99
    # S2: 0.40 -> basis 9,400,000.06; gain -200,000.06 (loss): PIT 0
    # S3: 0.25 -> basis 5,875,000.0375 -> half up 5,875,000.04; gain -875,000.04: PIT 0
    # S4: the last 0.15 carry the exact rest: 23,500,000.15 - 4,700,000.03 - 9,400,000.06
    #     - 5,875,000.0375 = 3,525,000.0225 -> 3,525,000.02; gain 2,474,999.98;
    #     PIT 10 % 247,499.998 -> 247,500.00; 20 % 494,999.996 -> 495,000.00
    # The rounded bases still add up to the lots' cost: 23,500,000.15.
    resident = realize_all(book_with("average", Residency.RESIDENT))
    assert resident == [
        (4_700_000_03, 899_999_97, 90_000_00),
        (9_400_000_06, -200_000_06, 0),
        (5_875_000_04, -875_000_04, 0),
        (3_525_000_02, 2_474_999_98, 247_500_00),
    ]
    assert sum(basis for basis, _, _ in resident) == 23_500_000_15
    non_resident = realize_all(book_with("average", Residency.NON_RESIDENT))
    assert [pit for _, _, pit in non_resident] == [179_999_99, 0, 0, 495_000_00]


def test_a_loss_pays_no_pit_and_is_not_offset() -> None:
    book = book_with("fifo", Residency.RESIDENT)
    loss = book.realize("h", "BTC", 10_000_000, 1_000_000_00, 0.0, "loss")  # basis 2,000,000.00
    assert (loss.gain_kzt, loss.pit_kzt) == (-1_000_000_00, 0)
    gain = book.realize("h", "BTC", 10_000_000, 3_000_000_00, 1.0, "gain")  # basis 2,000,000.00
    # The earlier loss is not netted against this gain.
    assert (gain.gain_kzt, gain.pit_kzt) == (1_000_000_00, 100_000_00)
    # The authority sees the taxable gains and the losses apart, so PIT matches the gains it is on.
    summary = book.authority_summary()
    assert (summary.gains_kzt, summary.losses_kzt) == (1_000_000_00, 1_000_000_00)
    assert summary.realized_gain_kzt == 0  # net
    assert summary.pit_due_kzt == 100_000_00  # 10 % of the taxable gains, not of the net


def test_pit_rounds_half_up_to_the_tiyn() -> None:
    assert [round_half_up(Fraction(n, 10)) for n in (14, 15, 25, 16)] == [1, 2, 3, 2]
    assert round_half_up(Fraction(-15, 10)) == -2
    book = TaxBook()
    book.add_lots("r", Residency.RESIDENT, "BTC", [Lot(2, D(0))])
    book.add_lots("n", Residency.NON_RESIDENT, "BTC", [Lot(2, D(0))])
    assert book.realize("r", "BTC", 1, 15, 0.0, "a").pit_kzt == 2  # 1.5 tiyn -> 2
    assert book.realize("r", "BTC", 1, 14, 0.0, "b").pit_kzt == 1  # 1.4 tiyn -> 1
    assert book.realize("n", "BTC", 1, 12, 0.0, "c").pit_kzt == 2  # 2.4 tiyn -> 2
    assert book.realize("n", "BTC", 1, 13, 0.0, "d").pit_kzt == 3  # 2.6 tiyn -> 3


def test_preview_consumes_nothing_and_realize_is_idempotent() -> None:
    book = book_with("fifo", Residency.RESIDENT)
    first = book.preview("h", "BTC", 60_000_000, 9_000_000_00)
    assert first == book.preview("h", "BTC", 60_000_000, 9_000_000_00)
    assert book.holding_minor("h", "BTC") == BTC
    done = book.realize("h", "BTC", 60_000_000, 9_000_000_00, 0.0, "s")
    assert done == first
    assert book.realize("h", "BTC", 60_000_000, 9_000_000_00, 0.0, "s") is done  # replay
    assert book.holding_minor("h", "BTC") == 40_000_000
    assert len(book.statement("h").sales) == 1


def test_units_beyond_the_lots_have_zero_basis() -> None:
    book = TaxBook()
    book.add_lots("h", Residency.RESIDENT, "BTC", [Lot(BTC, D("10000000"))])
    r = book.realize("h", "BTC", 2 * BTC, 30_000_000_00, 0.0, "s")
    assert r.basis_kzt == 10_000_000_00  # only the lot's bitcoin carries a basis
    assert r.gain_kzt == 20_000_000_00


def test_eth_lots_use_eighteen_decimals() -> None:
    book = TaxBook()
    book.add_lots("h", Residency.RESIDENT, "ETH", [Lot(10**18, D("1500000.33"))])
    # Half an ether: basis 750,000.165 KZT -> half up 750,000.17.
    assert book.realize("h", "ETH", 5 * 10**17, 800_000_00, 0.0, "s").basis_kzt == 750_000_17


def test_statement_and_authority_summary() -> None:
    book = TaxBook(epoch_unix_s=EPOCH_2025)
    book.add_lots("h", Residency.RESIDENT, "BTC", LOTS)
    book.add_lots("n", Residency.NON_RESIDENT, "BTC", LOTS)
    for sale_id, qty, proceeds, at_s in SALES:
        # The exchange withheld PIT on the resident's S1 and S2; everything else is self-declared.
        book.realize("h", "BTC", qty, proceeds, at_s, sale_id, withheld=sale_id in ("S1", "S2"))
        book.realize("n", "BTC", qty, proceeds, at_s, sale_id)
    assert book.year_of(400 * DAY_S) == 2026

    st = book.statement("h", 2025)  # S1..S3
    assert [r.sale_id for r in st.sales] == ["S1", "S2", "S3"]
    assert st.proceeds_kzt == 19_800_000_00
    assert st.gains_kzt == 2_299_999_95  # 1,600,000.00 + 699,999.95
    assert st.losses_kzt == 1_500_000_10
    assert st.net_gain_kzt == 799_999_85
    assert (st.pit_due_kzt, st.pit_withheld_kzt, st.pit_to_declare_kzt) == (
        230_000_00, 230_000_00, 0)
    whole = book.statement("h")
    assert (whole.pit_due_kzt, whole.pit_to_declare_kzt) == (380_000_00, 150_000_00)
    assert whole.basis_kzt == 23_500_000_15

    # Due: resident 380,000.00, non-resident 759,999.99 = 1,139,999.99; withheld 230,000.00;
    # to self-declare 909,999.99; at 50 % compliance 454,999.995 -> 455,000.00 declared;
    # the gap is 454,999.99.
    summary = book.authority_summary(compliance_rate=D("0.5"))
    assert summary.sales == 8
    assert summary.pit_due_by_residency_kzt == {
        Residency.RESIDENT: 380_000_00, Residency.NON_RESIDENT: 759_999_99}
    assert summary.pit_due_kzt == 1_139_999_99
    assert summary.pit_withheld_kzt == 230_000_00
    assert summary.pit_to_self_declare_kzt == 909_999_99
    assert summary.pit_expected_declared_kzt == 455_000_00
    assert summary.tax_gap_kzt == 454_999_99
    assert summary.pit_collected_kzt == 685_000_00
    assert summary.realized_gain_kzt == 2 * 2_299_999_85
    full = book.authority_summary()
    assert full.tax_gap_kzt == 0
    assert book.authority_summary(year=2026).pit_due_kzt == 150_000_00 + 300_000_00


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        TaxBook("lifo")  # type: ignore[arg-type]
    book = TaxBook()
    with pytest.raises(ValueError):
        book.realize("nobody", "BTC", 1, 1, 0.0, "s")
    book.add_lots("h", Residency.RESIDENT, "BTC", LOTS)
    with pytest.raises(ValueError):
        book.realize("h", "BTC", 0, 1, 0.0, "s")
    with pytest.raises(ValueError):
        book.authority_summary(compliance_rate=D("1.5"))


def test_fifo_consumes_the_oldest_lot_by_acquired_at_whatever_order_the_lots_are_given_in() -> None:
    """Lots given newest first (as the live exchange API accepts them) are still sold oldest first.

    0.5 BTC bought on day 100 at 24,000,000 and 0.5 BTC on day 10 at 19,600,000; selling 0.5 BTC
    consumes the day-10 lot: basis 9,800,000.00 KZT, not the newer lot's 12,000,000.00.
    """
    newest_first = (Lot(50_000_000, D("24000000"), acquired_at=100 * DAY_S),
                    Lot(50_000_000, D("19600000"), acquired_at=10 * DAY_S))
    book = TaxBook("fifo", epoch_unix_s=EPOCH_2025)
    book.add_lots("h", Residency.RESIDENT, "BTC", newest_first)
    first = book.realize("h", "BTC", 50_000_000, 10_000_000_00, 200 * DAY_S, "S1")
    assert first.basis_kzt == 9_800_000_00
    second = book.realize("h", "BTC", 50_000_000, 10_000_000_00, 201 * DAY_S, "S2")
    assert second.basis_kzt == 12_000_000_00


def test_fifo_orders_a_later_call_s_older_lot_before_the_lots_already_held() -> None:
    book = TaxBook("fifo", epoch_unix_s=EPOCH_2025)
    book.add_lots("h", Residency.RESIDENT, "BTC", [Lot(BTC, D("30000000"), acquired_at=50 * DAY_S)])
    book.add_lots("h", Residency.RESIDENT, "BTC", [Lot(BTC, D("10000000"), acquired_at=5 * DAY_S)])
    r = book.realize("h", "BTC", BTC, 20_000_000_00, 60 * DAY_S, "S1")
    assert r.basis_kzt == 10_000_000_00  # the day-5 lot goes first

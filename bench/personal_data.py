"""Personal data sealing (issue 13): commands per second on SQLite with customers' personal
data sealed and without, in-process and over HTTP, beside eventsourcing's raw save.

    python -m bench.personal_data --help
    python -m bench.personal_data --http-rounds 0 --rounds 8     # in-process only

Sealing on and off are two desks (or two servers) built the same way but for
`Settings.seal_personal_data` (`COMPLAINTS_SEAL_PERSONAL_DATA`); every event is chained in
both. They run side by side and take turns (on-off, off-on, ...), so that both see the
same moments of a shared machine; the best round of each is reported, beside every
round's figures and the on/off ratio of each round (the machine's load moves rates by far
more than sealing does, rounds apart).

- texts: generated Chinese complaints (seeded): a title (a mobile number in half of them),
  a description of 200-500 characters with a phone number and an e-mail address (a
  resident ID number in a third, a landline in a quarter), a customer's name and contact,
  an attachment in a quarter; notes with a phone number, outbound contact summaries with a
  phone number (an e-mail in some). Each is checked to hold something `mask_personal` masks.
- raw: `bench.commands.raw_save`, eventsourcing alone (aggregate in memory, one event per
  `Application.save`, short English texts): the ceiling, as in `bench.commands`.
- in-process: `complaints.store.open_desk(Settings(..., seal_personal_data=on/off))`, both
  desks fresh each round; `--complaints` registrations (`desk.register`, each a customer of
  their own: a new data key each), then `--notes` rounds of a note on every complaint and
  `--contacts` rounds of an outbound contact on every complaint (`desk.execute`, the
  complaints rotating, as `bench.commands` does), the desks taking turns every `--block`;
  registrations/s and commands/s timed apart, and this thread's CPU time per command.
- HTTP: `bench.commands.serving` and `load`, as `bench.commands.over_http`: the real command
  API (`complaints serve`, bearer token verified) under uvicorn, a process per variant, both
  up at once with `--complaints` complaints registered over HTTP; then wrk posting notes with
  a phone number to the rotating complaints, `--http-seconds` against each in turn, and the
  server's CPU time (/proc) per request.
- parts: `aggregates.personal_text.mask_personal` alone over the same texts, in a loop (the
  free-text detection, warm); and one more in-process round, not counted in the rates, with
  timers (wall and CPU) around the mapper's steps (`ComplaintMapper.to_stored_event`,
  `PersonalFields.seal`, `mask_personal`, the keyring's calls, the chain link, the
  recorder's insert, loading): where a sealed command's extra time goes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.commands import BENCH, raw_save

# ---------------------------------------------------------------------- texts

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉兰萍红鹏辉建国志强晓东海燕春梅雪"
PINYIN = ["zhang", "wang", "li", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun", "ma", "zhu",
          "hu", "guo", "lin", "luo", "zheng", "liang", "xie", "song", "tang", "han", "feng", "deng", "cao", "peng"]
GIVEN_PINYIN = ["wei", "fang", "na", "min", "jing", "li", "qiang", "lei", "jun", "yang", "yong", "yan", "jie",
                "juan", "tao", "ming", "chao", "xia", "ping", "gang", "hua", "peng", "hui", "xiaodong", "haiyan"]
DOMAINS = ["qq.com", "163.com", "126.com", "sina.com", "gmail.com", "foxmail.com", "outlook.com", "139.com",
           "yeah.net", "aliyun.com", "company.com.cn", "example.cn"]
REGIONS = ["110105", "310104", "440305", "330106", "510107", "420106", "320102", "370102", "210102", "610113"]
AREA_CODES = ["010", "021", "020", "022", "023", "025", "027", "028", "029", "0571", "0755", "0532", "0731"]

TITLES = [
    "宽带连续三天断网，报修后无人上门",
    "信用卡年费被重复扣除两次，要求退还",
    "网购手机收到时屏幕有裂痕，商家拒绝退货",
    "快递显示已签收，但本人并未收到包裹",
    "话费套餐被擅自变更，每月多扣费用",
    "物业维修拖延一个多月，漏水影响楼下住户",
    "航班取消后申请退款，一个月仍未到账",
    "会员自动续费前没有任何提醒",
    "新买的冰箱不制冷，售后推诿不处理",
    "贷款已提前结清，征信上仍显示逾期",
    "外卖送错餐且态度恶劣，平台不予赔付",
    "燃气表读数异常，本月账单是平时的三倍",
]
TITLE_PHONE = ["，请尽快回电{phone}", "（联系电话{phone}）", "，本人电话{phone}", " 急！请拨{phone}"]
OPENINGS = [
    "您好，我想反映一个已经拖了很久的问题。",
    "尊敬的客服人员：我是贵公司的老用户，这次实在忍无可忍才来投诉。",
    "你们好，关于我上个月办理的业务，现在出现了严重的问题，特此投诉。",
    "我要投诉贵公司的服务质量和处理效率。",
]
BODY = [
    "我于上个月十五日在贵公司官网办理了业务，当时客服承诺三个工作日内处理完毕。",
    "到目前为止已经过去两周，问题仍然没有得到任何解决。",
    "期间我多次拨打客服热线，每次都要排队半个小时以上，接通后客服只是让我继续等待。",
    "客服人员态度敷衍，没有给出任何明确的处理时间，也不肯留下工号。",
    "我已经按照要求提供了订单截图、付款凭证和身份证明材料，但对方说系统里查不到。",
    "这件事严重影响了我的正常工作和生活，家里老人也因此无法正常使用。",
    "希望贵公司能够尽快核实情况，给出合理的解释和处理方案。",
    "如果问题在本周内仍不能解决，我将向消费者协会和相关监管部门投诉。",
    "另外，上次维修人员上门时弄坏了门口的鞋柜，至今没有任何赔偿。",
    "我查看了账单明细，发现三月和四月都被多收了五十八元的增值服务费，而我从未订购过该服务。",
    "商品页面宣传七天无理由退货，但申请退货时被系统自动拒绝，理由是商品已拆封。",
    "快递员没有打电话就直接把包裹放在了小区门口，后来包裹丢失，快递公司互相推诿。",
    "我要求全额退款，并赔偿因此产生的额外费用，包括来回的交通费和误工费。",
    "工作人员说需要上级审批，但一直没有下文，再打电话过去又换了一个人接待。",
    "我已经使用贵公司的服务八年了，从来没有遇到过这样的情况，非常失望。",
    "请不要再让我重复说明情况，每次转接都要从头讲一遍，浪费了大量时间。",
    "昨天晚上十点多还收到了催缴短信，内容与实际情况完全不符，让人非常困扰。",
    "麻烦尽快安排专人跟进，并在处理完成后给我一个书面答复。",
    "订单编号是二〇二四年三月十五日下单的那一笔，金额三千二百元，已全额付款。",
    "我在网上看到不少用户反映了同样的问题，希望贵公司重视，不要再敷衍了事。",
]
CONTACT_LINES = [
    "我的联系电话是{phone}，邮箱{email}，白天随时可以联系我。",
    "如需核实情况，请拨打{phone}，或者发邮件到{email}。",
    "有任何进展请发送到我的邮箱{email}，或者直接打我手机{phone}。",
    "联系方式：手机{phone}；电子邮箱{email}。晚上八点以后请勿来电。",
]
ID_LINES = ["我的身份证号码是{id}，账户登记在我本人名下。", "开户人身份证号{id}，可以核对。"]
LANDLINE_LINES = ["工作时间也可以打我单位电话{landline}。", "家里座机{landline}，下午有人接听。"]
NOTES = [
    "已致电客户{phone}，客户表示仍未收到退款，已提交财务加急处理。",
    "客户来电（{phone}）询问进度，已告知预计三个工作日内回复，客户情绪较为激动。",
    "联系客户{phone}未接通，已发送短信提醒，明天上午十点再次联系。",
    "与客户确认新的联系方式：{phone}，原号码已停用，请后续使用新号码。",
    "客户要求改用邮件沟通，邮箱{email}，电话{phone}仅限工作日白天。",
    "已与维修部门核实，师傅将于周四上门，上门前会先打客户电话{phone}确认时间。",
]
CONTACTS = [
    "外呼{phone}，向客户说明处理进度，客户同意等待维修人员上门。",
    "电话回访{phone}，已解释扣费原因，客户要求书面说明，已发送至{email}。",
    "致电客户{phone}，告知退款已审批，预计五个工作日内原路退回。",
    "回拨{phone}，客户不在，家人代为转达，稍后客户回电确认。",
]


class Texts:
    """Seeded generator of the complaints' texts (every one has something to mask)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def mobile(self) -> str:
        r = self.rng
        digits = "1" + r.choice("3456789") + "".join(r.choice("0123456789") for _ in range(9))
        style = r.random()
        if style < 0.5:
            return digits
        if style < 0.7:
            return f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
        if style < 0.85:
            return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
        return f"+86 {digits}" if style < 0.95 else f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}"

    def landline(self) -> str:
        r = self.rng
        area = r.choice(AREA_CODES)
        local = r.choice("2345678") + "".join(r.choice("0123456789") for _ in range(7 if len(area) == 3 else 6))
        return f"{area}-{local}" if r.random() < 0.6 else f"({area}) {local[:-4]} {local[-4:]}"

    def email(self) -> str:
        r = self.rng
        local = r.choice(PINYIN) + r.choice(["", ".", "_"]) + r.choice(GIVEN_PINYIN)
        if r.random() < 0.5:
            local += str(r.randint(1, 9999))
        return f"{local}@{r.choice(DOMAINS)}"

    def resident_id(self) -> str:
        r = self.rng
        body = (r.choice(REGIONS) + f"{r.randint(1950, 2004)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}"
                + f"{r.randint(0, 999):03d}")
        weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
        return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights)) % 11]

    def name(self) -> str:
        return self.rng.choice(SURNAMES) + "".join(self.rng.choice(GIVEN) for _ in range(self.rng.choice((1, 2))))

    def registration(self, n: int) -> dict[str, Any]:
        r = self.rng
        title = r.choice(TITLES)
        if r.random() < 0.5:
            title += r.choice(TITLE_PHONE).format(phone=self.mobile())
        target = r.randint(200, 500)
        contact = r.choice(CONTACT_LINES).format(phone=self.mobile(), email=self.email())
        extras = [contact]
        if r.random() < 1 / 3:
            extras.append(r.choice(ID_LINES).format(id=self.resident_id()))
        if r.random() < 0.25:
            extras.append(r.choice(LANDLINE_LINES).format(landline=self.landline()))
        body = r.sample(BODY, len(BODY))
        parts = [r.choice(OPENINGS)]
        while body and sum(map(len, parts + extras)) + len(body[0]) <= target:
            parts.append(body.pop())
        for extra in extras:
            parts.insert(r.randint(1, len(parts)), extra)
        command: dict[str, Any] = {
            "channel": r.choice(["web", "phone", "email", "wechat", "app"]),
            "customer": {"id": f"C-{n:07d}", "tier": r.choice(["regular", "regular", "regular", "vip"])},
            "customer_personal": {"name": self.name(), "contact": self.mobile() if r.random() < 0.6 else self.email()},
            "title": title,
            "description": "".join(parts),
        }
        if r.random() < 0.25:
            command["attachments"] = [{"filename": f"{self.name()}的扣费截图.png", "content_type": "image/png",
                                       "size_bytes": r.randint(50_000, 900_000)}]
        return command

    def note(self) -> str:
        return self.rng.choice(NOTES).format(phone=self.mobile(), email=self.email())

    def contact(self) -> str:
        return self.rng.choice(CONTACTS).format(phone=self.mobile(), email=self.email())


@dataclass
class Workload:
    registrations: list[dict[str, Any]]
    notes: list[list[str]]  # per round, per complaint
    contacts: list[list[str]]

    @classmethod
    def make(cls, complaints: int, notes: int, contacts: int, seed: int) -> Workload:
        from aggregates.personal_text import mask_personal

    mask_personal = mask_personal.__wrapped__  # the detection itself, not its cache of recent texts
        from commands.models import RegisterComplaint

        texts = Texts(seed)
        work = cls([texts.registration(n) for n in range(complaints)],
                   [[texts.note() for _ in range(complaints)] for _ in range(notes)],
                   [[texts.contact() for _ in range(complaints)] for _ in range(contacts)])
        for register in work.registrations:
            RegisterComplaint.model_validate(register)
            assert mask_personal(register["description"]) != register["description"], register["description"]
        for text in [t for r in work.notes + work.contacts for t in r]:
            assert mask_personal(text) != text, text
        return work

    @property
    def commands(self) -> int:
        return sum(map(len, self.notes + self.contacts))


# ---------------------------------------------------------------------- in-process

PARTS = [  # (where, attribute, label): nested steps indented under the step that calls them
    ("commands.event_mapper:ComplaintMapper", "to_stored_event", "mapper: to_stored_event"),
    ("commands.event_mapper:PersonalFields", "seal", "  PersonalFields.seal (sealing, all of it)"),
    ("commands.event_mapper", "mask_personal", "    mask_personal (free-text detection)"),
    ("commands.personal_data:Keyring", "key_for", "    Keyring.key_for (registrations: the customer's key, read or made)"),
    ("commands.personal_data:Keyring", "subject_of", "    Keyring.subject_of (also within key_for)"),
    ("commands.personal_data:Keyring", "open_key", "    Keyring.open_key (also within key_for)"),
    ("commands.personal_data:Keyring", "seal", "    Keyring.seal (JSON, AES-256-GCM, base64)"),
    ("commands.event_chain:EventChain", "append", "  EventChain.append (chain link, on and off)"),
    ("recorder", "insert_events", "recorder: insert_events (the event's commit)"),
    ("commands.event_mapper:ComplaintMapper", "to_domain_event", "mapper: to_domain_event (loading a complaint)"),
    ("commands.event_mapper:PersonalFields", "unseal", "  PersonalFields.unseal"),
]
SEALING, MASKING = PARTS[1][2], PARTS[2][2]


def settings(folder: Path, name: str, seal: bool) -> Any:
    from complaints.settings import Settings

    return Settings(store="sqlite", sqlite_path=folder / f"{name}.sqlite", seal_personal_data=seal,
                    master_key=folder / "master.key", chain_key=folder / "chain.key",
                    secrets_key=folder / "secrets.key")


@dataclass
class Run:
    """One variant's figures in one round."""

    registrations_per_s: float
    commands_per_s: float
    all_per_s: float
    registration_cpu_us: float  # this thread's CPU time per registration
    command_cpu_us: float


@dataclass
class Timers:
    """Wall and CPU seconds per (variant, phase, step); `at` is the current (variant, phase)."""

    at: tuple[bool, str] = (True, "")
    wall: dict[tuple[bool, str, str], float] = field(default_factory=lambda: defaultdict(float))
    cpu: dict[tuple[bool, str, str], float] = field(default_factory=lambda: defaultdict(float))


@contextmanager
def timed(timers: Timers, targets: list[tuple[Any, str, str]]) -> Iterator[None]:
    """Wrap each `owner.attribute` in timers named `label` (wall clock and this thread's CPU),
    for the duration."""
    saved = []
    for owner, attribute, label in targets:
        original = getattr(owner, attribute)

        def wrapper(*args: Any, __original: Callable[..., Any] = original, __label: str = label,
                    **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return __original(*args, **kwargs)
            finally:
                timers.cpu[(*timers.at, __label)] += time.thread_time() - cpu
                timers.wall[(*timers.at, __label)] += time.perf_counter() - wall

        functools.update_wrapper(wrapper, original)
        saved.append((owner, attribute, original, attribute in vars(owner)))
        setattr(owner, attribute, wrapper)
    try:
        yield
    finally:
        for owner, attribute, original, own in reversed(saved):
            if own:
                setattr(owner, attribute, original)
            else:  # inherited: the base class's stays
                delattr(owner, attribute)


def in_process(folder: Path, name: str, work: Workload, block: int,
               timers: Timers | None = None) -> dict[bool, Run]:
    """One round: a desk sealing and one not, open side by side; the same registrations, then
    the same commands (notes, then contacts, the complaints rotating), in blocks of `block`,
    the two desks taking turns (on-off, off-on, ...) so that both see the same moments of a
    shared machine. With `timers`, the mapper's steps are timed too (a slower round)."""
    import importlib

    from commands.models import AddNote, RecordContact, RegisterComplaint
    from complaints.store import open_desk

    desks = {seal: open_desk(settings(folder, f"{name}-{'on' if seal else 'off'}", seal)) for seal in (True, False)}
    ids: dict[bool, list[Any]] = {True: [], False: []}
    wall: dict[tuple[bool, str], float] = defaultdict(float)
    cpu: dict[tuple[bool, str], float] = defaultdict(float)
    commands = [("note", n, text) for texts in work.notes for n, text in enumerate(texts)]
    commands += [("contact", n, text) for texts in work.contacts for n, text in enumerate(texts)]
    order = [True, False]

    def register(seal: bool, start: int, stop: int) -> None:
        ids[seal].extend(desks[seal].register(RegisterComplaint.model_validate(body), BENCH).complaint_id
                         for body in work.registrations[start:stop])

    def execute(seal: bool, start: int, stop: int) -> None:
        desk, complaint_ids = desks[seal], ids[seal]
        for kind, n, text in commands[start:stop]:
            command = (AddNote(text=text) if kind == "note"
                       else RecordContact(direction="outbound", channel="phone", summary=text))
            desk.execute(complaint_ids[n], command, BENCH)

    def in_turns(phase: str, count: int, act: Callable[[bool, int, int], None]) -> None:
        for start in range(0, count, block):
            for seal in order:
                if timers is not None:
                    timers.at = (seal, phase)
                began, began_cpu = time.perf_counter(), time.thread_time()
                act(seal, start, min(start + block, count))
                cpu[seal, phase] += time.thread_time() - began_cpu
                wall[seal, phase] += time.perf_counter() - began
            order.reverse()

    targets = []
    if timers is not None:
        for where, attribute, label in PARTS:
            if where == "recorder":
                owner: Any = type(desks[True].recorder)
            else:
                module, _, cls = where.partition(":")
                owner = importlib.import_module(module)
                owner = getattr(owner, cls) if cls else owner
            targets.append((owner, attribute, label))
    try:
        with timed(timers or Timers(), targets):
            in_turns("registration", len(work.registrations), register)
            in_turns("command", len(commands), execute)
    finally:
        for desk in desks.values():
            desk.close()
    if timers is not None:  # the whole phase, beside its steps
        for (seal, phase), seconds in wall.items():
            timers.wall[seal, phase, f"the whole {phase}"] = seconds
            timers.cpu[seal, phase, f"the whole {phase}"] = cpu[seal, phase]
    registrations, count = len(work.registrations), len(commands)
    return {seal: Run(registrations / wall[seal, "registration"], count / wall[seal, "command"],
                      (registrations + count) / (wall[seal, "registration"] + wall[seal, "command"]),
                      cpu[seal, "registration"] / registrations * 1e6, cpu[seal, "command"] / count * 1e6)
            for seal in (True, False)}


def masking(work: Workload, repeats: int = 5) -> dict[str, float]:
    """µs of `mask_personal` alone per registration (title and description), note, contact
    (best of `repeats` passes over the texts, in a tight loop: caches warm)."""
    from aggregates.personal_text import mask_personal

    groups = {
        "registration": [t for r in work.registrations for t in (r["title"], r["description"])],
        "note": [t for r in work.notes for t in r],
        "contact": [t for r in work.contacts for t in r],
    }
    per = {"registration": len(work.registrations), "note": sum(map(len, work.notes)),
           "contact": sum(map(len, work.contacts))}
    result = {}
    for name, texts in groups.items():
        if not texts:
            continue
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for text in texts:
                mask_personal(text)
            best = min(best, time.perf_counter() - start)
        result[name] = best / per[name] * 1e6
    return result


# ---------------------------------------------------------------------- HTTP


def over_http(folder: Path, work: Workload, complaints: int, rounds: int, seconds: int,
              connections: int) -> dict[bool, list[dict[str, float]]]:
    """Two command API servers, sealing on and off, up side by side, each with `complaints`
    complaints registered over HTTP; then `rounds` rounds of wrk against each in turn."""
    from contextlib import ExitStack

    from bench.commands import load, serving

    register, note = work.registrations[0], json.dumps({"text": work.notes[0][0]}, ensure_ascii=False)
    figures: dict[bool, list[dict[str, float]]] = {True: [], False: []}

    def cpu_seconds(pid: int) -> float:  # the process's user and system time, from /proc
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    with ExitStack() as stack, tqdm(total=2 + 2 * rounds, desc="HTTP (wrk, sealing on/off)", unit="step",
                                    file=sys.stderr) as bar:
        served = {}
        for seal in (True, False):
            env = {"COMPLAINTS_SEAL_PERSONAL_DATA": str(seal).lower(),
                   "COMPLAINTS_MASTER_KEY": str(folder / "master.key"),
                   "COMPLAINTS_CHAIN_KEY": str(folder / "chain.key"),
                   "COMPLAINTS_SECRETS_KEY": str(folder / "secrets.key")}
            served[seal] = stack.enter_context(serving(folder / f"http-{'on' if seal else 'off'}.sqlite", complaints,
                                                       True, extra_env=env, register=register, note=note))
            bar.update()
        for round_ in range(rounds):
            for seal in ((True, False) if round_ % 2 == 0 else (False, True)):
                server = served[seal]
                cpu = cpu_seconds(server.pid)
                figures[seal].append(load(server.base, server.script, seconds, connections))
                requests = figures[seal][-1]["requests_per_s"] * seconds
                figures[seal][-1]["cpu_us"] = (cpu_seconds(server.pid) - cpu) / max(requests, 1) * 1e6
                bar.update()
                bar.set_postfix_str(f"{'on' if seal else 'off'} {figures[seal][-1]['requests_per_s']:.0f}/s")
    return figures


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--complaints", type=int, default=500, help="complaints registered per run, each customer"
                        " their own (HTTP: per server)")
    parser.add_argument("--notes", type=int, default=4, help="in-process: notes per complaint")
    parser.add_argument("--contacts", type=int, default=1, help="in-process: outbound contacts per complaint")
    parser.add_argument("--rounds", type=int, default=4, help="in-process rounds (raw, then sealing on and off"
                        " taking turns); best of each")
    parser.add_argument("--block", type=int, default=50, help="in-process: registrations or commands per turn")
    parser.add_argument("--http-seconds", type=int, default=10, help="how long each wrk run loads a server")
    parser.add_argument("--connections", type=int, default=8, help="wrk's concurrent connections")
    parser.add_argument("--http-rounds", type=int, default=6, help="HTTP rounds, a wrk run against each server in"
                        " turn; 0: no HTTP")
    parser.add_argument("--seed", type=int, default=13, help="the texts' random seed")
    args = parser.parse_args()

    began, load_at_start = time.monotonic(), os.getloadavg()[0]
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
          f" load average {load_at_start:.2f}", file=sys.stderr)
    work = Workload.make(args.complaints, args.notes, args.contacts, args.seed)
    lengths = [len(r["description"]) for r in work.registrations]
    note_lengths = [len(t) for r in work.notes + work.contacts for t in r]
    timers = Timers()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raws: list[float] = []
        runs: dict[bool, list[Run]] = {True: [], False: []}
        with tqdm(total=args.rounds * 2 + 1, desc="in-process (raw; sealing on/off)", unit="step",
                  file=sys.stderr) as bar:
            for round_ in range(args.rounds):
                raws.append(raw_save(folder / f"raw{round_}.sqlite", args.complaints, args.notes + args.contacts))
                bar.update()
                measured = in_process(folder, f"desk{round_}", work, args.block)
                for seal, run in measured.items():
                    runs[seal].append(run)
                bar.update()
                bar.set_postfix_str(f"commands: on {runs[True][-1].commands_per_s:.0f}/s,"
                                    f" off {runs[False][-1].commands_per_s:.0f}/s")
            in_process(folder, "parts", work, args.block, timers)
            bar.update()
        masked = masking(work)
        http = over_http(folder, work, args.complaints, args.http_rounds, args.http_seconds,
                         args.connections) if args.http_rounds else {}
    load_at_end = os.getloadavg()[0]

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
          f" load average {load_at_start:.2f} at the start, {load_at_end:.2f} at the end;"
          f" {time.monotonic() - began:.0f} s")
    print(f"texts: descriptions {min(lengths)}-{max(lengths)} characters (mean {statistics.mean(lengths):.0f}),"
          f" notes and contacts {min(note_lengths)}-{max(note_lengths)}")
    raw = max(raws)
    print(f"raw eventsourcing save: {raw:.0f} events/s (best of {args.rounds}; rounds "
          + ", ".join(f"{r:.0f}" for r in raws) + ")")
    print(f"in-process, best of {args.rounds} rounds (the two desks taking turns every {args.block}):")
    for attribute, label in (("registrations_per_s", "registrations"), ("commands_per_s", "commands"),
                             ("all_per_s", "all")):
        on = max(getattr(run, attribute) for run in runs[True])
        off = max(getattr(run, attribute) for run in runs[False])
        ratios = [getattr(a, attribute) / getattr(b, attribute) for a, b in zip(runs[True], runs[False])]
        print(f"  {label:13} on {on:6.0f}/s, off {off:6.0f}/s: on = {on / off:.0%} of off"
              f" ({1e6 / on - 1e6 / off:+.0f} µs each), {on / raw:.0%} of raw; per round on/off "
              + ", ".join(f"{r:.0%}" for r in ratios) + f" (median {statistics.median(ratios):.0%})")
        print(f"  {'':13} rounds on " + ", ".join(f"{getattr(r, attribute):.0f}" for r in runs[True])
              + "; off " + ", ".join(f"{getattr(r, attribute):.0f}" for r in runs[False]))
    for attribute, label in (("registration_cpu_us", "registration"), ("command_cpu_us", "command")):
        on = statistics.median(getattr(r, attribute) for r in runs[True])
        off = statistics.median(getattr(r, attribute) for r in runs[False])
        print(f"  CPU per {label} (this thread, median of rounds): on {on:.0f} µs, off {off:.0f} µs:"
              f" {on - off:+.0f} µs")
    print("free-text detection alone (mask_personal over the same texts, warm): "
          + ", ".join(f"{k} {v:.1f} µs" for k, v in masked.items()))
    for phase in ("registration", "command"):
        print(f"where a {phase}'s time goes (a round with timers), µs: wall on / off, CPU on / off")
        labels = [label for _, _, label in PARTS] + [f"the whole {phase}"]
        count = len(work.registrations) if phase == "registration" else work.commands
        per = {key: value / count * 1e6 for key, value in timers.wall.items() if key[1] == phase}
        per_cpu = {key: value / count * 1e6 for key, value in timers.cpu.items() if key[1] == phase}
        for label in labels:
            if (True, phase, label) not in per and (False, phase, label) not in per:
                continue
            print(f"  {label:55} {per.get((True, phase, label), 0.0):8.1f} / {per.get((False, phase, label), 0.0):8.1f}"
                  f"   {per_cpu.get((True, phase, label), 0.0):8.1f} / {per_cpu.get((False, phase, label), 0.0):8.1f}")
        whole = per[True, phase, f"the whole {phase}"]
        sealing, sealing_cpu = per.get((True, phase, SEALING), 0.0), per_cpu.get((True, phase, SEALING), 0.0)
        mask_cpu = per_cpu.get((True, phase, MASKING), 0.0)
        print(f"  sealing a {phase}: {sealing:.0f} µs wall ({sealing / whole:.1%} of the whole), {sealing_cpu:.0f} µs"
              f" CPU, of which free-text detection {mask_cpu:.0f} µs ({mask_cpu / max(sealing_cpu, 1e-9):.0%})")
    if http:
        print(f"HTTP (wrk -t2 -c{args.connections}, {args.http_seconds} s a run, notes with a phone number, the two"
              " servers in turn):")
        for seal in (True, False):
            for r in http[seal]:
                print(f"  sealing {'on ' if seal else 'off'}: {r['requests_per_s']:6.0f} commands/s, p50"
                      f" {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms,"
                      f" non-2xx {r['non_2xx']:.0f}; server CPU {r['cpu_us']:.0f} µs a request")
        on = max(r["requests_per_s"] for r in http[True])
        off = max(r["requests_per_s"] for r in http[False])
        ratios = [a["requests_per_s"] / b["requests_per_s"] for a, b in zip(http[True], http[False])]
        mean_on = statistics.mean(r["requests_per_s"] for r in http[True])
        mean_off = statistics.mean(r["requests_per_s"] for r in http[False])
        print(f"  best: on {on:.0f}/s, off {off:.0f}/s: on = {on / off:.0%} of off ({1e6 / on - 1e6 / off:+.0f} µs a"
              f" command); means {mean_on:.0f} and {mean_off:.0f}/s: {mean_on / mean_off:.0%}; per round on/off "
              + ", ".join(f"{r:.0%}" for r in ratios) + f" (median {statistics.median(ratios):.0%})")
        cpu_on = statistics.median(r["cpu_us"] for r in http[True])
        cpu_off = statistics.median(r["cpu_us"] for r in http[False])
        print(f"  server CPU a request (median of runs): on {cpu_on:.0f} µs, off {cpu_off:.0f} µs:"
              f" {cpu_on - cpu_off:+.0f} µs; CPU-bound, the rates would be on = {cpu_off / cpu_on:.0%} of off")


if __name__ == "__main__":
    main()

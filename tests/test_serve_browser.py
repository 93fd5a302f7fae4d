"""The server's pages in a real browser (headless Chromium through selenium): labelling pairs with the
keyboard, a streamed chat turn and an A/B click, as people use them; a screenshot of each page.

test_serve_pages.py checks the APIs over HTTP; this checks the pages' scripts on top of them: the keys,
the streaming, and that data holding markup shows as text. With TFPREF_SCREENSHOTS_DIR=DIR the
screenshots are also copied to DIR (that is how docs/images/serve-*.png are made); a normal run
writes only under pytest's tmp dir.
"""
import csv
import json
import os
import shutil
import struct

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from tfpref.data.preferences import load_preferences
from tfpref.preferences import export_for_labelling, write_jsonl
from tfpref.serve.chat_routes import CHUNK_TOKENS
from tfpref.serve.settings import ServeSettings

from serving import RunningServer, call_signature, two_language_model_exports

pytestmark = pytest.mark.slow

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
# (prompt, a PEP 8 completion, a worse one): what a labeller of tfpref's default task would judge.
PAIRS = [
    ("def mean(values):\n", "    return sum(values) / len(values)\n", "    return sum(values)/len(values)\n"),
    ("def is_even(n):\n", "    return n % 2 == 0\n", "    return n%2==0\n"),
    ("def greet(name):\n", '    return f"Hello, {name}!"\n', "  return 'Hello, '+name+'!'\n"),
    ("def page_title(title):\n", "    return html.escape(title)\n", XSS),
    ("def clamp(x, low, high):\n", "    return max(low, min(x, high))\n", "    return max(low,min(x,high))\n"),
    ("class Point:\n", "    def __init__(self, x, y):\n        self.x, self.y = x, y\n",
     "    def __init__(self,x,y):\n        self.x,self.y=x,y\n"),
    ("def first(items):\n", "    return items[0] if items else None\n", "    if len(items)>0 : return items[0]\n"),
    ("import os\n\n\ndef home():\n", '    return os.path.expanduser("~")\n', "    return os.path.expanduser( '~' )\n"),
    ("def squares(n):\n", "    return [i * i for i in range(n)]\n", "    return [i*i for i in range (n)]\n"),
    ("def read_text(path):\n", '    with open(path, encoding="utf-8") as f:\n        return f.read()\n',
     "    f=open(path); return f.read()\n"),
]
CHAT_NEW_TOKENS = 2 * CHUNK_TOKENS + 8  # three model calls: the reply streams in pieces
AB_NEW_TOKENS = 24
WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    return two_language_model_exports(root)


@pytest.fixture(scope="module")
def label_rows(exports):
    """The rows of a `tfpref preferences export` CSV of PAIRS (made by that command's own function)."""
    root = exports["root"]
    write_jsonl(str(root / "pairs.jsonl"), [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    assert export_for_labelling(str(root / "pairs.jsonl"), str(root / "to_label.csv"), seed=1) == len(PAIRS)
    with open(root / "to_label.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def server(exports, label_rows):
    root = exports["root"]
    # The A/B arms alone (no --model_dir): the chat page then talks to arm A, and one model fewer loads.
    # A/B at temperature 0: each arm's headline is then its export's greedy one, which the test can check.
    settings = ServeSettings(max_new_tokens=64, label_input=str(root / "to_label.csv"),
                             label_output=str(root / "labels.jsonl"), ab=(str(root / "a"), str(root / "b")),
                             ab_log=str(root / "ab.jsonl"), ab_max_new_tokens=AB_NEW_TOKENS, ab_temperature=0.0)
    running = RunningServer(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        # A failure, not a skip: CI installs them (.ci/run), so a missing browser there is a broken setup.
        pytest.fail("the browser tests need Chromium and its driver on PATH (Debian: apt-get install chromium "
                    f"chromium-driver; .ci/run installs them); found chromium={binary}, chromedriver={driver}",
                    pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary  # with the driver's path below, selenium never downloads either
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; the pages are our own.
    for argument in ("--headless=new", "--window-size=1100,800", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--no-first-run"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield chrome
    chrome.quit()


def wait(browser, condition, message):
    return WebDriverWait(browser, WAIT_SECONDS).until(lambda _: condition(), message)


def text_of(browser, element_id):
    """An element's textContent: exactly the text put in, where selenium's .text is as rendered."""
    return browser.execute_script(f"return document.getElementById('{element_id}').textContent")


def screenshot(browser, tmp_path, name):
    """The window as docs/images/serve-<name>.png: in tmp_path, and in $TFPREF_SCREENSHOTS_DIR if set."""
    path = tmp_path / f"serve-{name}.png"
    assert browser.save_screenshot(str(path))
    png = path.read_bytes()
    size = browser.execute_script("return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio]")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and list(struct.unpack(">II", png[16:24])) == size
    copy_to = os.environ.get("TFPREF_SCREENSHOTS_DIR")
    if copy_to:
        shutil.copyfile(path, os.path.join(copy_to, path.name))


def next_prompt(browser, shown):
    """Waits for the labelling page to leave the item whose prompt is `shown`; the new prompt ("" at the end).
    Every prompt differs, and render() fills the prompt and the completions in one go."""
    wait(browser, lambda: text_of(browser, "prompt") != shown, f"the page stayed on {shown!r}")
    return text_of(browser, "prompt")


def test_ten_pairs_labelled_with_the_keyboard_are_saved_as_pressed(browser, server, exports, label_rows, tmp_path):
    rows = {row["prompt"]: row for row in label_rows}
    browser.get(server.url + "/label")
    keys = browser.find_element(By.TAG_NAME, "body")
    prompt = next_prompt(browser, "")
    assert text_of(browser, "progress") == "0 of 10 labelled"
    screenshot(browser, tmp_path, "label")
    skipped = prompt
    keys.send_keys("s")
    prompt = next_prompt(browser, prompt)
    pressed, xss_seen = {}, False
    while prompt:
        row = rows[prompt]
        shown = [browser.execute_script(f"return document.querySelector('#completion-{k} pre').textContent")
                 for k in (1, 2)]
        assert shown == [row["completion_a"], row["completion_b"]]  # key 1 is the file's A, 2 its B
        if XSS in shown:
            xss_seen = True
            box = browser.find_element(By.ID, f"completion-{shown.index(XSS) + 1}")
            assert "<script>" in box.text and 'onerror="window.pwned=2">' in box.text  # as text, not markup
            assert not browser.find_elements(By.CSS_SELECTOR, "#item script, #item img")
        # Both keys, in an order unrelated to which completion is the better one.
        pressed[prompt] = "1" if len(pressed) % 3 else "2"
        keys.send_keys(pressed[prompt])
        prompt = next_prompt(browser, prompt)
    assert len(pressed) == 10 and list(pressed)[-1] == skipped  # the skipped pair came back, last
    assert xss_seen and browser.execute_script("return typeof window.pwned") == "undefined"
    assert text_of(browser, "progress") == "10 of 10 labelled"
    assert text_of(browser, "status") == "All items are labelled. Thank you!"

    output = exports["root"] / "labels.jsonl"
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 10 and len({r["item_id"] for r in records}) == 10
    for record in records:
        row = rows[record["prompt"]]
        a_first = pressed[record["prompt"]] == "1"
        expected = (row["completion_a"], row["completion_b"]) if a_first else (row["completion_b"], row["completion_a"])
        assert (record["chosen"], record["rejected"]) == expected
    data = load_preferences(str(output))
    assert data.kind == "pairwise" and len(data.items) == 10


def test_a_chat_turn_streams_the_exports_reply(browser, server, exports, tmp_path):
    browser.get(server.url + "/")
    wait(browser, lambda: text_of(browser, "model") == "Model a, version 1 (chat template)", "no model line")
    for field, value in (("max_new_tokens", CHAT_NEW_TOKENS), ("temperature", 0)):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(value))
    settings = {name: float(browser.find_element(By.ID, name).get_attribute("value"))
                for name in ("max_new_tokens", "temperature", "top_k", "top_p", "seed")}
    calls = server.batcher("a").calls
    message = "Write a function that adds two numbers."
    browser.find_element(By.ID, "message").send_keys(message + Keys.ENTER)
    wait(browser, lambda: text_of(browser, "status").startswith(("done", "stopped")), "the reply did not end")

    expected = call_signature(exports["a"], "chat", roles=[["user"]], contents=[[message]],
                              max_new_tokens=int(settings["max_new_tokens"]), temperature=settings["temperature"],
                              top_k=int(settings["top_k"]), top_p=settings["top_p"], seed=int(settings["seed"]))
    reply = browser.execute_script("return document.querySelector('.message.assistant .text').textContent")
    assert reply == expected["completions"][0]
    # An untrained model's greedy reply usually runs to the limit, in three calls; about one in ten
    # (the tiny model's weights differ each run) emits its end token first, in fewer.
    finished, made = expected["finished"][0], expected["num_tokens"][0]
    ending = "done" if finished else "stopped at max new tokens"
    assert text_of(browser, "status") == f"{ending} ({made} tokens)"
    assert server.batcher("a").calls - calls == max(1, -(-made // CHUNK_TOKENS))
    assert browser.execute_script("return document.querySelector('.message.user .text').textContent") == message
    assert browser.find_element(By.ID, "message").get_attribute("value") == ""
    screenshot(browser, tmp_path, "chat")


def test_a_headline_click_is_counted_in_the_report(browser, server, exports, tmp_path):
    prompt = "A headline about Python's standard library: "
    browser.get(server.url + "/ab")
    browser.find_element(By.ID, "prompt").send_keys(prompt)
    browser.find_element(By.CSS_SELECTOR, "#form button[type=submit]").click()
    headline = browser.find_element(By.ID, "headline")
    wait(browser, headline.is_displayed, "no headline was shown")
    headline.click()
    wait(browser, lambda: text_of(browser, "status") == "clicked", "the click was not logged")
    screenshot(browser, tmp_path, "ab")

    report = httpx.get(server.url + "/ab/report.json", timeout=WAIT_SECONDS).json()
    shown = [arm for arm, stats in report["arms"].items() if stats["impressions"]]
    assert len(shown) == 1 and report["arms"][shown[0]]["impressions"] == 1
    assert report["arms"][shown[0]]["clicks"] == 1 and sum(s["clicks"] for s in report["arms"].values()) == 1
    # The headline is the export's own greedy completion (the arm's model, temperature 0).
    greedy = call_signature(exports[shown[0].lower()], "generate", prompts=[prompt], max_new_tokens=AB_NEW_TOKENS,
                            temperature=0.0, top_k=0, top_p=0.95, seed=0)
    assert text_of(browser, "headline") == greedy["completions"][0]

    browser.get(server.url + "/ab/report")
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#arms tr")) == 2, "no report table")
    table = {row.find_element(By.TAG_NAME, "td").text: [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
             for row in browser.find_elements(By.CSS_SELECTOR, "#arms tr")}
    arm = shown[0]
    assert table[arm][1:5] == [f"{arm.lower()} version 1", "1", "1", "100.00%"]
    other = "B" if arm == "A" else "A"
    assert table[other][2:5] == ["0", "0", "–"]
    screenshot(browser, tmp_path, "report")

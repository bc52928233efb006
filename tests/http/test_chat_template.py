"""--chat-template and template errors, end to end: the override renders what the server
tokenizes, raise_exception in a template is a 400 naming the message, a template that does not
parse stops start-up, and special tokens never leak into returned content."""
import json
import os
import subprocess
import tempfile

from harness import BIN, MODEL, Server

# Phi-3.5-mini's template (reference/phi3-models.md §6.5) with a role check added.
TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unsupported role: ' + message['role']) }}{% endif %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def write_tmp(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False)
    f.write(text)
    f.close()
    return f.name


def test_override_renders_and_tokenizes_as_transformers():
    path = write_tmp(TEMPLATE)
    s = Server("--chat-template", path)
    try:
        msgs = [{"role": "system", "content": "You are kind."}, {"role": "user", "content": "Hi"}]
        status, _, body = s.post("/tokenize", {"model": "phi3-demo", "messages": msgs})
        assert status == 200, body
        ids = json.loads(body)["tokens"]
        # The system turn is kept (the demo's own template drops it), no BOS (the template has
        # none), no newline token after the special tokens (rstrip), generation prompt at the end.
        assert ids[0] == 32006 and 1 not in ids[:1]
        assert 13 not in ids
        assert ids[-2:] == [32007, 32001]
        # Prompt tokens of a chat request equal /tokenize of the rendered prompt.
        status, _, body = s.post("/v1/chat/completions", {"model": "phi3-demo", "messages": msgs,
                                                          "max_tokens": 2})
        assert status == 200, body
        assert json.loads(body)["usage"]["prompt_tokens"] == len(ids)
        # raise_exception in the template: a 400 carrying the template's message.
        status, _, body = s.post("/v1/chat/completions", {
            "model": "phi3-demo", "max_tokens": 2,
            "messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]})
        assert status == 400, body
        err = json.loads(body)["error"]
        assert "Unsupported role: tool" in err["message"]
        assert err["type"] == "invalid_request_error"
        # The server keeps serving.
        status, _, _ = s.post("/v1/chat/completions", {"model": "phi3-demo", "messages": msgs,
                                                       "max_tokens": 1})
        assert status == 200
    finally:
        s.signal()
        s.wait()
        os.unlink(path)


def test_template_that_does_not_parse_stops_startup():
    path = write_tmp("{% for m in messages %}{{ m['content'] }")
    try:
        r = subprocess.run([BIN, "serve", "--model", MODEL, "--port", "0", "--chat-template", path],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "template" in r.stderr.lower()
        assert "Segmentation" not in r.stderr and r.returncode < 128
    finally:
        os.unlink(path)


def test_missing_template_file_stops_startup():
    r = subprocess.run([BIN, "serve", "--model", MODEL, "--port", "0", "--chat-template",
                        "/nonexistent/template.jinja"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and r.returncode < 128
    assert "template" in r.stderr.lower()


def test_special_tokens_stay_out_of_content(server):
    # Greedy on the demo model with the stop ids turned into ordinary tokens: whatever the model
    # emits, special tokens are skipped in the text unless skip_special_tokens is false.
    body = {"model": "phi3-demo", "prompt": [1, 32010, 15043, 32007, 32001], "max_tokens": 24,
            "temperature": 0, "ignore_eos": True, "logit_bias": {"32007": 100}}
    status, _, data = server.post("/v1/completions", body)
    assert status == 200, data
    text = json.loads(data)["choices"][0]["text"]
    assert "<|end|>" not in text
    body["skip_special_tokens"] = False
    status, _, data = server.post("/v1/completions", body)
    assert status == 200, data
    assert "<|end|>" in json.loads(data)["choices"][0]["text"]

from optimem.renderers.tokens import IMAGE_TOKEN_ID, OCR_ADDED_TOKENS, count_tokens, decode, encode, load_tokenizer


def test_ocr_added_tokens_have_their_ids():
    tok = load_tokenizer()
    for tok_id, content in OCR_ADDED_TOKENS.items():
        assert tok.token_to_id(content) == tok_id
    assert tok.get_vocab_size() == 128827


def test_image_placeholder_is_one_token_and_never_merged():
    ids = encode("<image><image>\n<|User|>hello")
    assert ids[:2] == [IMAGE_TOKEN_ID, IMAGE_TOKEN_ID]
    assert 128825 in ids


def test_counts_and_round_trip():
    text = "Optical memory keeps old turns as pages. 光学记忆。"
    assert count_tokens("") == 0
    assert 5 < count_tokens(text) < len(text)
    assert decode(encode(text)) == text


def test_long_texts_are_counted_in_pieces_never_short(monkeypatch):
    import json
    from pathlib import Path

    from optimem.renderers import tokens

    chat = [json.loads(line)["content"] for line in
            (Path(__file__).parents[1] / "optimem/data/example_chat.jsonl").read_text().splitlines()]
    text = "\n".join(chat)
    exact = len(tokens.encode(text))
    monkeypatch.setattr(tokens, "COUNT_PIECE_CHARS", 5000)
    pieces = list(tokens._pieces(text))
    assert "".join(pieces) == text and len(pieces) > 20
    counted = tokens.count_tokens(text)
    assert exact <= counted <= exact + 2 * (len(pieces) - 1)  # a boundary costs a token or two, never less
    assert tokens.count_tokens_batch(["", "hello world", text]) == [0, 2, counted]

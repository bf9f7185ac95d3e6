from worker.sentences import finished_sentences, sentence_key


def texts(text: str) -> list[str]:
    return [s.text for s in finished_sentences(text)]


def test_finished_sentences_and_unfinished_tail() -> None:
    assert texts("We flew to Paris. Then Rome! Did you go? And then") == [
        "We flew to Paris.",
        "Then Rome!",
        "Did you go?",
    ]


def test_terminator_must_be_followed_by_space_or_end() -> None:
    assert texts("It cost 3.5 euros in Paris") == []
    assert texts("It cost 3.5 euros in Paris.") == ["It cost 3.5 euros in Paris."]
    assert texts("Wow!!! Really?!") == ["Wow!!!", "Really?!"]


def test_closing_quotes_belong_to_the_sentence() -> None:
    assert texts('She said "go to Oslo." Then left.') == ['She said "go to Oslo."', "Then left."]


def test_offsets_index_the_original_text() -> None:
    text = "  København 🇩🇰 via Zürich.  Paris!"
    for span in finished_sentences(text):
        assert text[span.start : span.end] == span.text
    assert texts(text) == ["København 🇩🇰 via Zürich.", "Paris!"]


def test_punctuation_only_is_not_a_sentence() -> None:
    assert texts("... ! ?") == []
    assert texts("") == []


def test_sentence_key_changes_with_the_text() -> None:
    assert sentence_key("I went to Paris.") == sentence_key("I went to Paris.")
    assert sentence_key("I went to Paris.") != sentence_key("I went to Paris and Rome.")

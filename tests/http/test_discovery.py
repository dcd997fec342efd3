def test_x():
    import http.client
    assert True

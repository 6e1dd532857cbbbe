/*
 * console.js - the h5gate web console: shared helpers (md5, REST calls with the session) and the
 * logic of the two pages (login.html, index.html). Plain ES2017, no dependencies; the live tiles
 * use h5splayer.js (and hls.js through it).
 */

var H5GATE_SESSION_KEY = 'h5gate_session';
var H5GATE_USER_KEY = 'h5gate_user';

/* ---------------------------------------------------------------- md5 (RFC 1321) of a UTF-8 string */

function h5gateMd5(text) {
    var bytes = new TextEncoder().encode(String(text));
    var n = bytes.length;
    var words = new Array((((n + 8) >>> 6) + 1) * 16).fill(0);
    for (var i = 0; i < n; i++) {
        words[i >> 2] |= bytes[i] << ((i % 4) * 8);
    }
    words[n >> 2] |= 0x80 << ((n % 4) * 8);
    words[words.length - 2] = (n * 8) >>> 0;
    words[words.length - 1] = Math.floor(n / 0x20000000) >>> 0;

    var S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    var K = [];
    for (var k = 0; k < 64; k++) {
        K[k] = Math.floor(Math.abs(Math.sin(k + 1)) * 0x100000000) | 0;
    }
    var a0 = 0x67452301, b0 = 0xefcdab89 | 0, c0 = 0x98badcfe | 0, d0 = 0x10325476;

    for (var off = 0; off < words.length; off += 16) {
        var a = a0, b = b0, c = c0, d = d0;
        for (var j = 0; j < 64; j++) {
            var f, g, round = j >> 4;
            if (round === 0) {
                f = (b & c) | (~b & d);
                g = j;
            } else if (round === 1) {
                f = (d & b) | (~d & c);
                g = (5 * j + 1) % 16;
            } else if (round === 2) {
                f = b ^ c ^ d;
                g = (3 * j + 5) % 16;
            } else {
                f = c ^ (b | ~d);
                g = (7 * j) % 16;
            }
            var s = S[round * 4 + (j % 4)];
            var sum = (a + f + K[j] + words[off + g]) | 0;
            a = d;
            d = c;
            c = b;
            b = (b + ((sum << s) | (sum >>> (32 - s)))) | 0;
        }
        a0 = (a0 + a) | 0;
        b0 = (b0 + b) | 0;
        c0 = (c0 + c) | 0;
        d0 = (d0 + d) | 0;
    }
    var hex = '';
    [a0, b0, c0, d0].forEach(function (word) {
        for (var b = 0; b < 4; b++) {
            hex += ((word >>> (b * 8)) & 0xff).toString(16).padStart(2, '0');
        }
    });
    return hex;
}

/* ---------------------------------------------------------------- session and REST */

function h5gateSession() {
    return sessionStorage.getItem(H5GATE_SESSION_KEY) || '';
}

function h5gateGoLogin() {
    sessionStorage.removeItem(H5GATE_SESSION_KEY);
    if (window.location.pathname !== '/login') {
        window.location.href = '/login';
    }
}

/*
 * GET /api/v1/<name>?<params>&session=<s>; resolves with the JSON answer whatever the HTTP status
 * (errors carry {bStatus:false, strCode}). A 401 on anything but Login means the session is gone:
 * back to /login, and the promise rejects.
 */
function h5gateApi(name, params) {
    var query = new URLSearchParams();
    Object.keys(params || {}).forEach(function (key) {
        var value = params[key];
        if (value !== undefined && value !== null) {
            query.set(key, String(value));
        }
    });
    var headers = {};
    var session = h5gateSession();
    if (name !== 'Login' && session) {
        query.set('session', session);
        headers.Authorization = 'token ' + session;
    }
    return fetch('/api/v1/' + name + '?' + query.toString(), { headers: headers, cache: 'no-store' })
        .then(function (resp) {
            if (resp.status === 401 && name !== 'Login') {
                h5gateGoLogin();
                throw new Error('not logged in');
            }
            return resp.json().catch(function () {
                return { bStatus: false, strCode: 'HTTP ' + resp.status + ' ' + resp.statusText };
            });
        });
}

function h5gateEl(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
        if (key === 'text') {
            el.textContent = attrs[key];
        } else if (key.slice(0, 2) === 'on') {
            el.addEventListener(key.slice(2), attrs[key]);
        } else {
            el.setAttribute(key, attrs[key]);
        }
    });
    (children || []).forEach(function (child) {
        el.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    });
    return el;
}

/* ---------------------------------------------------------------- login page */

function h5gateLoginPage() {
    var form = document.getElementById('login-form');
    var message = document.getElementById('login-message');
    var button = form.querySelector('button[type=submit]');
    form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        var user = form.elements.user.value.trim();
        var password = form.elements.password.value;
        message.textContent = '';
        button.disabled = true;
        h5gateApi('Login', { user: user, password: h5gateMd5(password) })
            .then(function (res) {
                if (res.bStatus && res.strSession) {
                    sessionStorage.setItem(H5GATE_SESSION_KEY, res.strSession);
                    sessionStorage.setItem(H5GATE_USER_KEY, user);
                    window.location.href = '/';
                    return;
                }
                var text = res.strCode || 'login failed';
                if (typeof res.tLockTimeResidue === 'number' && res.tLockTimeResidue > 0) {
                    text += ' (locked for another ' + res.tLockTimeResidue + ' s)';
                }
                message.textContent = text;
            })
            .catch(function (err) {
                message.textContent = 'cannot reach the server: ' + err.message;
            })
            .then(function () {
                button.disabled = false;
            });
    });
    form.elements.user.focus();
}

/* ---------------------------------------------------------------- live console (index page) */

var H5GATE_KEEPALIVE_MS = 60000;
var H5GATE_REFRESH_MS = 10000;
var H5GATE_STATS_MS = 1000;

function H5gateTile(source, grid) {
    this.token = source.strToken;
    this.player = null;
    this.mode = localStorage.getItem('h5gate_mode_' + this.token) ||
        (H5sPlayerKind({}) === 'hls' ? 'hls' : 'ws');
    this._build(source);
    grid.appendChild(this.el);
    this.update(source);
    this.play();
}

H5gateTile.prototype._build = function (source) {
    var self = this;
    this.dot = h5gateEl('span', { class: 'dot', title: 'offline' });
    this.name = h5gateEl('span', { class: 'tile-name' });
    this.tokenLabel = h5gateEl('span', { class: 'tile-token', text: source.strToken });
    this.video = h5gateEl('video', { muted: '', playsinline: '', autoplay: '' });
    this.video.muted = true;
    this.video.addEventListener('click', function () {
        self.video.muted = !self.video.muted;
    });
    this.error = h5gateEl('div', { class: 'tile-error', hidden: '' });
    this.video.addEventListener('h5serror', function (ev) {
        self.error.textContent = ev.detail.message;
        self.error.hidden = false;
    });
    this.video.addEventListener('playing', function () {
        self.error.hidden = true;
    });
    this.info = h5gateEl('span', { class: 'tile-info' });
    this.wsButton = h5gateEl('button', { type: 'button', class: 'seg', text: 'WS',
        title: 'fMP4 over WebSocket (low latency)', onclick: function () { self.setMode('ws'); } });
    this.hlsButton = h5gateEl('button', { type: 'button', class: 'seg', text: 'HLS',
        title: 'HLS (hls.js or native)', onclick: function () { self.setMode('hls'); } });
    var del = h5gateEl('button', { type: 'button', class: 'danger small', text: 'Delete',
        title: 'delete this source', onclick: function () { self.remove(); } });
    this.el = h5gateEl('article', { class: 'tile', 'data-token': source.strToken }, [
        h5gateEl('header', { class: 'tile-head' }, [this.dot, this.name, this.tokenLabel]),
        h5gateEl('div', { class: 'tile-video' }, [this.video, this.error]),
        h5gateEl('footer', { class: 'tile-foot' }, [
            h5gateEl('span', { class: 'segmented' }, [this.wsButton, this.hlsButton]),
            this.info,
            del
        ])
    ]);
};

H5gateTile.prototype.update = function (source) {
    this.name.textContent = source.strName || source.strToken;
    this.dot.classList.toggle('online', !!source.bOnline);
    this.dot.title = source.bOnline ? 'online' : 'offline';
};

H5gateTile.prototype.conf = function () {
    return {
        videodom: this.video,
        protocol: window.location.protocol,
        host: window.location.host,
        rootpath: '/',
        token: this.token,
        hlsver: 'v1',
        session: h5gateSession(),
        streamprofile: 'main',
        consolelog: 'false'
    };
};

H5gateTile.prototype.play = function () {
    this.stop();
    this.error.hidden = true;
    var conf = this.conf();
    this.player = this.mode === 'hls' ? new H5sPlayerHls(conf) : H5sPlayerCreate(conf);
    this.player.connect();
    this.wsButton.classList.toggle('active', this.mode === 'ws');
    this.hlsButton.classList.toggle('active', this.mode === 'hls');
};

H5gateTile.prototype.stop = function () {
    if (this.player) {
        this.player.disconnect();
        this.player = null;
    }
};

H5gateTile.prototype.setMode = function (mode) {
    if (mode === this.mode && this.player) {
        return;
    }
    this.mode = mode;
    localStorage.setItem('h5gate_mode_' + this.token, mode);
    this.play();
};

H5gateTile.prototype.showStats = function () {
    if (!this.player) {
        return;
    }
    var s = this.player.stats();
    var text = this.mode.toUpperCase() + ' · ' + s.state;
    if (s.state === 'playing') {
        text += ' · ' + s.latency.toFixed(2) + ' s behind';
    }
    if (s.reconnects) {
        text += ' · ' + s.reconnects + (s.reconnects === 1 ? ' reconnect' : ' reconnects');
    }
    this.info.textContent = text;
};

H5gateTile.prototype.remove = function () {
    var self = this;
    if (!window.confirm('Delete source "' + this.token + '"?')) {
        return;
    }
    h5gateApi('DelSrc', { token: this.token }).then(function (res) {
        if (!res.bStatus) {
            h5gateNotify(res.strCode || 'delete failed', true);
            return;
        }
        h5gateNotify(res.strCode || 'deleted', false);
        H5gateConsole.refresh();
    }).catch(function (err) {
        h5gateNotify(err.message, true);
    });
    return self;
};

H5gateTile.prototype.destroy = function () {
    this.stop();
    this.el.remove();
};

function h5gateNotify(text, isError) {
    var box = document.getElementById('notice');
    if (!box) {
        return;
    }
    box.textContent = text;
    box.className = 'notice ' + (isError ? 'error' : 'ok');
    box.hidden = false;
    clearTimeout(h5gateNotify._timer);
    h5gateNotify._timer = setTimeout(function () {
        box.hidden = true;
    }, isError ? 10000 : 4000);
}

var H5gateConsole = {
    tiles: {},

    refresh: function () {
        var self = this;
        return h5gateApi('GetSrc', {}).then(function (res) {
            var sources = res.src || [];
            var grid = document.getElementById('grid');
            var seen = {};
            sources.forEach(function (src) {
                seen[src.strToken] = true;
                if (self.tiles[src.strToken]) {
                    self.tiles[src.strToken].update(src);
                } else {
                    self.tiles[src.strToken] = new H5gateTile(src, grid);
                }
            });
            Object.keys(self.tiles).forEach(function (token) {
                if (!seen[token]) {
                    self.tiles[token].destroy();
                    delete self.tiles[token];
                }
            });
            document.getElementById('empty').hidden = sources.length > 0;
            if (res.bStatus === false && res.strCode) {
                h5gateNotify(res.strCode, true);
            }
        }).catch(function (err) {
            h5gateNotify('cannot list sources: ' + err.message, true);
        });
    },

    addSource: function (form) {
        var self = this;
        var f = form.elements;
        var params = { name: f.name.value.trim(), token: f.token.value.trim(), url: f.url.value.trim() };
        if (f.user.value) {
            params.user = f.user.value;
        }
        if (f.password.value) {
            params.password = f.password.value;
        }
        var message = document.getElementById('add-message');
        message.textContent = '';
        return h5gateApi('AddSrcRTSP', params).then(function (res) {
            if (!res.bStatus) {
                message.textContent = res.strCode || 'add failed';
                return;
            }
            form.reset();
            h5gateNotify(res.strCode || 'added', false);
            self.refresh();
        }).catch(function (err) {
            message.textContent = err.message;
        });
    },

    logout: function () {
        Object.keys(this.tiles).forEach(function (token) {
            H5gateConsole.tiles[token].stop();
        });
        var done = function () {
            sessionStorage.removeItem(H5GATE_SESSION_KEY);
            window.location.href = '/login';
        };
        h5gateApi('Logout', {}).then(done, done);
    }
};

function h5gateConsolePage() {
    if (!h5gateSession()) {
        h5gateGoLogin();
        return;
    }
    var user = sessionStorage.getItem(H5GATE_USER_KEY);
    if (user) {
        document.getElementById('user').textContent = user;
    }
    document.getElementById('logout').addEventListener('click', function () {
        H5gateConsole.logout();
    });
    document.getElementById('add-form').addEventListener('submit', function (ev) {
        ev.preventDefault();
        H5gateConsole.addSource(ev.target);
    });
    H5gateConsole.refresh();
    setInterval(function () { H5gateConsole.refresh(); }, H5GATE_REFRESH_MS);
    setInterval(function () {
        h5gateApi('Keepalive', {}).catch(function () { /* 401 already handled */ });
    }, H5GATE_KEEPALIVE_MS);
    setInterval(function () {
        Object.keys(H5gateConsole.tiles).forEach(function (token) {
            H5gateConsole.tiles[token].showStats();
        });
    }, H5GATE_STATS_MS);
}

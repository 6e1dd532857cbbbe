/*
 * recordings.js - the console's recordings page: a source's recorded spans on a day's timeline, played
 * through H5sPlayerWS's playback mode (pbconf: pause, seek, speed), file downloads and the snapshots
 * gallery. Plain ES2017; uses console.js (h5gateApi, h5gateSession, h5gateEl, h5gateNotify) and
 * h5splayer.js.
 */

var H5GATE_DAY_MS = 86400000;
var H5GATE_RECORDINGS_REFRESH_MS = 15000;
var H5GATE_TICKS = { 86400: 3 * 3600000, 3600: 600000, 600: 60000, 60: 10000 };  /* zoom (s) -> tick step (ms) */

function h5gatePad(n) {
    return (n < 10 ? '0' : '') + n;
}

function h5gateClock(ms) {
    var d = new Date(ms);
    return h5gatePad(d.getHours()) + ':' + h5gatePad(d.getMinutes()) + ':' + h5gatePad(d.getSeconds());
}

/* "HH:MM" or "HH:MM:SS" on the day starting at dayStart (local time), in ms; null if not a time. */
function h5gateClockMs(dayStart, text) {
    var m = /^(\d{1,2}):(\d{2})(?::(\d{2}))?$/.exec(String(text || '').trim());
    if (!m || +m[1] > 23 || +m[2] > 59 || +(m[3] || 0) > 59) {
        return null;
    }
    var d = new Date(dayStart);
    d.setHours(+m[1], +m[2], +(m[3] || 0), 0);
    return d.getTime();
}

function h5gateFileUrl(path) {
    return path + '?session=' + encodeURIComponent(h5gateSession());
}

var H5gateRecordings = {
    token: '',
    dayStart: 0,
    records: [],
    player: null,
    begin: 0,          /* begintime of the current playback socket (ms) */
    playhead: 0,       /* recorded time being shown (ms), from H5S_EVENT_PB_TIME */
    paused: false,
    zoom: 86400,       /* seconds the timeline shows */
    windowStart: 0,
    press: null,       /* a pointer pressed on the timeline */
    selecting: false,  /* drags mark the export span instead of moving the window */
    selection: null,   /* [from, to] ms to export */

    el: function (id) {
        return document.getElementById(id);
    },

    loadSources: function () {
        var self = this;
        return h5gateApi('GetSrc', {}).then(function (res) {
            var select = self.el('source');
            select.innerHTML = '';
            (res.src || []).forEach(function (src) {
                var option = h5gateEl('option', { value: src.strToken, text: src.strName + ' (' + src.strToken + ')' });
                option.dataset.rec = src.bRec ? '1' : '';
                select.appendChild(option);
            });
            var wanted = new URLSearchParams(window.location.search).get('token');
            if (wanted) {
                select.value = wanted;
            }
            self.token = select.value;
        });
    },

    load: function () {
        var self = this;
        this.stop();
        this.token = this.el('source').value;
        var parts = this.el('day').value.split('-');
        this.dayStart = new Date(+parts[0], +parts[1] - 1, +parts[2]).getTime();
        this.windowStart = this.dayStart;
        this.zoom = 86400;
        this.selection = null;
        this.el('export-link').hidden = true;
        this.el('export-message').textContent = '';
        var option = this.el('source').selectedOptions[0];
        this.el('continuous').checked = !!(option && option.dataset.rec);
        if (!this.token) {
            return Promise.resolve();
        }
        return Promise.all([this.loadRecords(), this.loadSnapshots(), this.loadStatus()]).then(function () {
            var last = self.records[self.records.length - 1];
            if (last) {
                self.setZoom(600, last.nStartTimeMs);
            }
        });
    },

    range: function () {
        return {
            token: this.token,
            start: new Date(this.dayStart).toISOString(),
            end: new Date(this.dayStart + H5GATE_DAY_MS).toISOString()
        };
    },

    loadRecords: function () {
        var self = this;
        var params = this.range();
        params.type = 'record';
        return h5gateApi('Search', params).then(function (res) {
            if (res.bStatus === false) {
                h5gateNotify(res.strCode, true);
            }
            self.records = res.record || [];
            self.renderList();
            self.renderTimeline();
        });
    },

    loadSnapshots: function () {
        var self = this;
        var params = this.range();
        params.type = 'snapshot';
        return h5gateApi('Search', params).then(function (res) {
            var box = self.el('shots');
            box.innerHTML = '';
            var shots = (res.record || []).slice(-60).reverse();
            shots.forEach(function (shot) {
                var url = h5gateFileUrl(shot.strPath);
                box.appendChild(h5gateEl('figure', {}, [
                    h5gateEl('a', { href: url, target: '_blank', rel: 'noopener' }, [
                        h5gateEl('img', { src: url, alt: shot.strPath, loading: 'lazy' })
                    ]),
                    h5gateEl('figcaption', { text: h5gateClock(shot.nStartTimeMs) })
                ]));
            });
            self.el('no-shots').hidden = shots.length > 0;
        });
    },

    loadStatus: function () {
        var self = this;
        var token = this.token;
        return Promise.all([
            h5gateApi('GetRecordStatus', { token: token }),
            h5gateApi('GetStorageInfo', {})
        ]).then(function (answers) {
            var status = (answers[0].src || [])[0];
            self.el('rec-status').textContent = status ? status.strStatus : '';
            var info = answers[1];
            var mine = (info.src || []).filter(function (s) { return s.strToken === token; })[0];
            if (info.nTotalByte) {
                var text = (info.nFreeByte / 1073741824).toFixed(1) + ' GB free of ' +
                    (info.nTotalByte / 1073741824).toFixed(1) + ' GB';
                if (mine) {
                    text += ' · this source: ' + (mine.nRecordByte / 1048576).toFixed(1) + ' MB in ' +
                        mine.nRecordFiles + ' files, ' + mine.fDaysHeld.toFixed(1) + ' days';
                }
                self.el('storage').textContent = text;
            }
        });
    },

    renderList: function () {
        var self = this;
        var box = this.el('spans');
        box.innerHTML = '';
        if (!this.records.length) {
            box.appendChild(h5gateEl('p', { class: 'muted', text: 'No recordings.' }));
            return;
        }
        var rows = this.records.map(function (rec, i) {
            var kind = rec.nType.replace('H5_REC_', '').toLowerCase();
            return h5gateEl('tr', { 'data-index': String(i), onclick: function () {
                self.playAt(rec.nStartTimeMs);
            } }, [
                h5gateEl('td', { class: 'clock', text: h5gateClock(rec.nStartTimeMs) }),
                h5gateEl('td', { text: rec.strDuration + ' s' + (rec.bRecording ? ' …' : '') }),
                h5gateEl('td', { class: 'muted', text: kind }),
                h5gateEl('td', {}, [h5gateEl('a', { href: h5gateFileUrl(rec.strPath), download: '',
                    onclick: function (ev) { ev.stopPropagation(); }, text: 'download' })])
            ]);
        });
        box.appendChild(h5gateEl('table', {}, [h5gateEl('tbody', {}, rows)]));
    },

    renderTimeline: function () {
        var line = this.el('timeline');
        var width = this.zoom * 1000;
        var start = this.windowStart;
        Array.prototype.slice.call(line.querySelectorAll('.span, .tick')).forEach(function (n) { n.remove(); });
        this.records.forEach(function (rec) {
            var a = Math.max(rec.nStartTimeMs, start);
            var b = Math.min(rec.nEndTimeMs, start + width);
            if (b <= a) {
                return;
            }
            line.appendChild(h5gateEl('div', {
                class: 'span ' + rec.nType,
                title: h5gateClock(rec.nStartTimeMs) + ' - ' + h5gateClock(rec.nEndTimeMs),
                style: 'left:' + (100 * (a - start) / width) + '%;width:' + (100 * (b - a) / width) + '%'
            }));
        });
        var step = H5GATE_TICKS[this.zoom];
        for (var t = Math.ceil(start / step) * step; t <= start + width; t += step) {
            if ((t - start) / width < 0.02 || (t - start) / width > 0.98) {
                continue;  /* a label at the very edge would be cut in half */
            }
            var label = step < 60000 ? h5gateClock(t) : h5gateClock(t).slice(0, 5);
            line.appendChild(h5gateEl('span', { class: 'tick', text: label,
                style: 'left:' + (100 * (t - start) / width) + '%' }));
        }
        this.showPlayhead();
    },

    /*
     * Zoom around what is shown: the playhead when it is in view, else the middle of the window
     * (never back to midnight). The window stays inside the day.
     */
    setZoom: function (seconds, around) {
        var shown = this.playhead && this.playhead >= this.windowStart &&
            this.playhead <= this.windowStart + this.zoom * 1000;
        var centre = around || (shown ? this.playhead : this.windowStart + this.zoom * 500);
        this.zoom = seconds;
        this.moveWindow(centre - seconds * 500);
        Array.prototype.slice.call(document.querySelectorAll('[data-zoom]')).forEach(function (b) {
            b.classList.toggle('active', +b.dataset.zoom === seconds);
        });
    },

    moveWindow: function (start) {
        var last = this.dayStart + H5GATE_DAY_MS - this.zoom * 1000;
        this.windowStart = Math.max(this.dayStart, Math.min(start, last));
        this.renderTimeline();
    },

    /* The moment under a pointer's x on the timeline. */
    timeAt: function (clientX) {
        var box = this.el('timeline').getBoundingClientRect();
        var x = Math.max(0, Math.min(box.width, clientX - box.left));
        return this.windowStart + x / box.width * this.zoom * 1000;
    },

    /*
     * A press on the timeline: a click (no movement) plays from there; a drag moves the window (or, with
     * "Select" on, marks the span to export).
     */
    pointerDown: function (ev) {
        if (ev.button !== 0) {
            return;
        }
        var line = this.el('timeline');
        line.setPointerCapture(ev.pointerId);
        this.press = { x: ev.clientX, start: this.windowStart, at: this.timeAt(ev.clientX), moved: false,
            width: line.getBoundingClientRect().width };
    },

    pointerMove: function (ev) {
        var press = this.press;
        if (!press) {
            return;
        }
        if (!press.moved && Math.abs(ev.clientX - press.x) < 5) {
            return;
        }
        press.moved = true;
        if (this.selecting) {
            this.setSelection(press.at, this.timeAt(ev.clientX));
        } else {
            this.el('timeline').classList.add('panning');
            this.moveWindow(press.start - (ev.clientX - press.x) / press.width * this.zoom * 1000);
        }
    },

    pointerUp: function (ev) {
        var press = this.press;
        this.press = null;
        this.el('timeline').classList.remove('panning');
        if (press && !press.moved) {
            this.playAt(this.timeAt(ev.clientX));
        }
    },

    /* The span to export, in ms; shown on the timeline and in the two clock fields. */
    setSelection: function (a, b) {
        var from = Math.round(Math.min(a, b) / 1000) * 1000;
        var to = Math.round(Math.max(a, b) / 1000) * 1000;
        this.selection = to > from ? [from, to] : null;
        this.el('export-from').value = this.selection ? h5gateClock(from) : '';
        this.el('export-to').value = this.selection ? h5gateClock(to) : '';
        this.showSelection();
    },

    showSelection: function () {
        var box = this.el('selection');
        var sel = this.selection;
        var width = this.zoom * 1000;
        if (!sel || sel[1] <= this.windowStart || sel[0] >= this.windowStart + width) {
            box.hidden = true;
            return;
        }
        var a = Math.max(sel[0], this.windowStart);
        var b = Math.min(sel[1], this.windowStart + width);
        box.hidden = false;
        box.style.left = (100 * (a - this.windowStart) / width) + '%';
        box.style.width = (100 * (b - a) / width) + '%';
    },

    /* The clock fields typed by hand: the selection follows them. */
    selectionFromFields: function () {
        var from = h5gateClockMs(this.dayStart, this.el('export-from').value);
        var to = h5gateClockMs(this.dayStart, this.el('export-to').value);
        this.selection = from !== null && to !== null && to > from ? [from, to] : null;
        this.showSelection();
    },

    exportClip: function () {
        var self = this;
        var message = this.el('export-message');
        var link = this.el('export-link');
        this.selectionFromFields();
        link.hidden = true;
        if (!this.selection) {
            message.textContent = 'choose a span: drag on the timeline with "Select" on, or type the two times';
            return Promise.resolve();
        }
        var token = this.token;
        message.textContent = 'Exporting\u2026';
        this.el('export').disabled = true;
        return h5gateApi('ExportClip', { token: token, start: new Date(this.selection[0]).toISOString(),
            end: new Date(this.selection[1]).toISOString() }).then(function (res) {
            if (!res.bStatus) {
                message.textContent = res.strCode || 'export failed';
                return null;
            }
            return self.waitExport(token, res.strFileName);
        }).catch(function (err) {
            message.textContent = err.message;
        }).then(function () {
            self.el('export').disabled = false;
        });
    },

    waitExport: function (token, name) {
        var self = this;
        var message = this.el('export-message');
        return h5gateApi('GetArchiveStatus', { token: token, filename: name }).then(function (res) {
            if (res.bStatus === false) {
                message.textContent = res.strCode || 'export failed';
                return null;
            }
            if (res.nPercentage < 100) {
                message.textContent = 'Exporting\u2026 ' + res.nPercentage + ' %';
                return new Promise(function (resolve) { setTimeout(resolve, 500); }).then(function () {
                    return self.waitExport(token, name);
                });
            }
            message.textContent = res.strCode;
            var link = self.el('export-link');
            link.href = h5gateFileUrl(res.strUrl);
            link.setAttribute('download', name + '.mp4');
            link.textContent = 'Download ' + name + '.mp4';
            link.hidden = false;
            return res;
        });
    },

    showPlayhead: function () {
        var marker = this.el('playhead');
        var offset = this.playhead - this.windowStart;
        marker.style.display = this.playhead && offset >= 0 && offset <= this.zoom * 1000 ? 'block' : 'none';
        marker.style.left = (100 * offset / (this.zoom * 1000)) + '%';
    },

    recordAt: function (ms) {
        return this.records.filter(function (r) {
            return r.nStartTimeMs <= ms && ms < r.nEndTimeMs;
        })[0];
    },

    /* Play from a moment of the day; a moment between recordings plays the next one. */
    playAt: function (ms) {
        if (!this.recordAt(ms)) {
            var next = this.records.filter(function (r) { return r.nStartTimeMs > ms; })[0];
            if (!next) {
                h5gateNotify('nothing recorded after ' + h5gateClock(ms), true);
                return;
            }
            ms = next.nStartTimeMs;
        }
        this.playhead = ms;
        this.showPlayhead();
        if (this.player && ms >= this.begin) {
            this.player.seek(Math.floor((ms - this.begin) / 1000));
            this.setPaused(false);
            return;
        }
        this.stop();
        this.begin = Math.floor(ms / 1000) * 1000;
        var self = this;
        var video = this.el('pb-video');
        this.player = new H5sPlayerWS({
            videodom: video,
            protocol: window.location.protocol,
            host: window.location.host,
            rootpath: '/',
            token: this.token,
            session: h5gateSession(),
            streamprofile: 'main',
            consolelog: 'false',
            pbconf: {
                begintime: new Date(this.begin).toISOString(),
                endtime: new Date(this.dayStart + H5GATE_DAY_MS).toISOString(),
                autoplay: 'true',
                serverpb: 'true',
                filename: 'fake',
                callback: function (text) { self.onEvent(text); },
                userdata: null
            }
        });
        this.player.connect();
        var speed = this.el('speed').value;
        if (speed !== '1') {
            setTimeout(function () { if (self.player) { self.player.speed(speed); } }, 500);
        }
        this.el('hint').hidden = true;
        this.el('play').disabled = false;
        this.setPaused(false);
    },

    onEvent: function (text) {
        var event;
        try {
            event = JSON.parse(text);
        } catch (e) {
            return;
        }
        if (event.type === 'H5S_EVENT_PB_TIME') {
            this.playhead = Date.parse(event.pbTime.strTime);
            this.el('clock').textContent = h5gateClock(this.playhead);
            this.showPlayhead();
            this.showCurrent();
        } else if (event.type === 'H5S_EVENT_PB_END') {
            this.el('clock').textContent = h5gateClock(this.playhead) + ' (end)';
        }
    },

    showCurrent: function () {
        var rec = this.recordAt(this.playhead);
        var link = this.el('download');
        link.hidden = !rec;
        if (rec) {
            link.href = h5gateFileUrl(rec.strPath);
        }
        var index = this.records.indexOf(rec);
        Array.prototype.slice.call(document.querySelectorAll('#spans tr')).forEach(function (row) {
            row.classList.toggle('current', row.dataset.index === String(index));
        });
    },

    setPaused: function (paused) {
        this.paused = paused;
        this.el('play').textContent = paused ? 'Play' : 'Pause';
    },

    togglePause: function () {
        if (!this.player) {
            return;
        }
        var video = this.el('pb-video');
        if (this.paused) {
            this.player.resume();
            video.play().catch(function () { /* needs a gesture: the button is one */ });
        } else {
            this.player.pause();
            video.pause();
        }
        this.setPaused(!this.paused);
    },

    stop: function () {
        if (this.player) {
            this.player.disconnect();
            this.player = null;
        }
        this.playhead = 0;
        this.el('hint').hidden = false;
        this.el('play').disabled = true;
        this.el('download').hidden = true;
        this.el('clock').textContent = '--:--:--';
    },

    setContinuous: function (enable) {
        var self = this;
        h5gateApi('SetRecord', { token: this.token, enable: enable ? 'true' : 'false' }).then(function (res) {
            h5gateNotify(res.strCode, !res.bStatus);
            var option = self.el('source').selectedOptions[0];
            if (option && res.bStatus) {
                option.dataset.rec = enable ? '1' : '';
            }
            self.loadStatus();
        });
    },

    snapshot: function () {
        var self = this;
        h5gateApi('Snapshot', { token: this.token }).then(function (res) {
            h5gateNotify(res.strCode, !res.bStatus);
            self.loadSnapshots();
        });
    }
};

function h5gateRecordingsPage() {
    var page = H5gateRecordings;
    if (!h5gatePageStart(function () { page.stop(); })) {
        return;
    }
    var now = new Date();
    page.el('day').value = now.getFullYear() + '-' + h5gatePad(now.getMonth() + 1) + '-' + h5gatePad(now.getDate());
    page.el('source').addEventListener('change', function () { page.load(); });
    page.el('day').addEventListener('change', function () { page.load(); });
    page.el('continuous').addEventListener('change', function (ev) { page.setContinuous(ev.target.checked); });
    page.el('snap').addEventListener('click', function () { page.snapshot(); });
    page.el('play').addEventListener('click', function () { page.togglePause(); });
    page.el('speed').addEventListener('change', function (ev) {
        if (page.player) {
            page.player.speed(ev.target.value);
        }
    });
    var line = page.el('timeline');
    line.addEventListener('pointerdown', function (ev) { page.pointerDown(ev); });
    line.addEventListener('pointermove', function (ev) { page.pointerMove(ev); });
    line.addEventListener('pointerup', function (ev) { page.pointerUp(ev); });
    line.addEventListener('pointercancel', function () { page.press = null; });
    page.el('select-mode').addEventListener('click', function (ev) {
        page.selecting = !page.selecting;
        ev.currentTarget.classList.toggle('active', page.selecting);
        ev.currentTarget.setAttribute('aria-pressed', page.selecting ? 'true' : 'false');
        line.classList.toggle('selecting', page.selecting);
    });
    page.el('export-from').addEventListener('change', function () { page.selectionFromFields(); });
    page.el('export-to').addEventListener('change', function () { page.selectionFromFields(); });
    page.el('export').addEventListener('click', function () { page.exportClip(); });
    Array.prototype.slice.call(document.querySelectorAll('[data-zoom]')).forEach(function (button) {
        button.addEventListener('click', function () { page.setZoom(+button.dataset.zoom); });
    });
    page.loadSources().then(function () { return page.load(); });
    setInterval(function () {
        if (page.token && Date.now() < page.dayStart + H5GATE_DAY_MS) {
            page.loadRecords();
            page.loadStatus();
        }
    }, H5GATE_RECORDINGS_REFRESH_MS);
}
